"""Parameter constraints and option values shared across skocc (no torch here).

The command line builds its parser from these without importing torch.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils._param_validation import Interval

__all__ = ["DEFAULT_OPSET", "INPUT_DTYPES", "INPUT_LAYOUTS", "StrictInterval"]

#: Layouts an exported ONNX graph can take its input in (:func:`skocc.export_onnx`).
INPUT_LAYOUTS = ("auto", "channels_first", "channels_last", "flat")
#: Element types an exported ONNX graph can take its input in.
INPUT_DTYPES = ("uint8", "float32")
#: The opset torch's exporter writes natively (its "torchlib" is written for it);
#: the first with ``Resize(antialias=1)``, which ``resolution`` needs.
DEFAULT_OPSET = 18


class StrictInterval(Interval):
    """scikit-learn's :class:`Interval` that refuses bools.

    ``True`` is an ``Integral`` (and a ``Real``) in Python, so ``Interval``
    accepted ``resolution=True`` or ``batch_size=True`` as 1. Every numeric
    parameter of skocc uses this constraint; its message is ``Interval``'s.
    """

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)
