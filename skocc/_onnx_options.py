"""Option values of :func:`skocc.export_onnx`, importable without torch or scikit-learn.

The command line builds its parser from them, and ``skocc --version`` must stay fast.
"""

#: Layouts an exported ONNX graph can take its input in.
INPUT_LAYOUTS = ("auto", "channels_first", "channels_last", "flat")
#: Element types an exported ONNX graph can take its input in.
INPUT_DTYPES = ("uint8", "float32")
#: The opset torch's exporter writes natively (its "torchlib" is written for it);
#: the first with ``Resize(antialias=1)``, which ``resolution`` needs.
DEFAULT_OPSET = 18
