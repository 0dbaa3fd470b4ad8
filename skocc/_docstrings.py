"""Parameter descriptions shared by several estimators, written once.

Docstrings contain placeholders such as ``{{data_params}}`` on a line of their
own; :func:`fill_doc` replaces each with the text below, indented as the
placeholder is.
"""

from __future__ import annotations

import re

_SHARED = {
    "data_params": """
resolution : int or None, default=None
    ``None`` trains at the size of the images given to ``fit``. An int resizes
    every image to ``resolution x resolution`` inside the network (batched, on
    the device, antialiased bilinear), so it can be searched over with
    ``GridSearchCV``. Images at predict time must still have the shape seen in
    ``fit``.
normalize : {None, "image"}, default=None
    ``"image"`` standardises every image by its own mean and standard deviation
    (global contrast normalisation, as Deep SVDD does). Use it for photographs
    with uneven lighting or exposure; leave ``None`` when absolute intensity is
    informative (digits, X-ray-like images).
data_format : {"auto", "channels_first", "channels_last"}, default="auto"
    Where the channel axis of 4-D input (5-D with views) is. ``"auto"`` reads
    ``(n, H, W, C)`` as channels-last when the last axis has 1 to 4 entries and
    the channel candidate before the image does not, and ``(n, C, H, W)``
    otherwise (see :func:`skocc.images.infer_channels_last`).
image_shape : tuple of int or None, default=None
    Shape of one sample, used to read 2-D input ``(n, n_features)`` as images:
    ``(H, W)`` or ``(C, H, W)``, and ``(V, H, W)`` or ``(V, C, H, W)`` for
    multi-view estimators. ``None`` reads 2-D input as one-row images
    ``(n, 1, 1, n_features)``, so tabular data works too. Ignored for input
    with more than two dimensions.""",
    "training_params": """
max_epochs : int, default=50
    Passes over the training data.
batch_size : int, default=64
    Images per training and scoring batch. Before building the network,
    ``fit`` estimates the memory training needs (16 bytes per parameter for
    weights, gradients and Adam's moments, plus one batch's activations,
    traced on torch's meta device) and raises a ValueError naming the size
    parameters when it exceeds the device's available memory.
lr : float, default=1e-3
    Learning rate of Adam.
weight_decay : float, default=0.0
    L2 penalty of Adam.
device : str, default="auto"
    ``"auto"`` uses CUDA when available and the CPU otherwise; any device string
    torch accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) except
    ``"meta"``, which holds no data. The device used is ``device_``. On a
    CUDA device, training and scoring data of at most 1 GiB (and a quarter
    of the free GPU memory) is copied to the GPU once;
    larger data travels batch by batch through pinned memory with
    asynchronous copies, and the network runs in the channels-last memory
    layout.
precision : {"float32", "bfloat16", "float16"}, default="float32"
    Numeric precision of the network's forward passes in training and
    scoring: ``"bfloat16"`` and ``"float16"`` run them under ``torch.autocast``
    (mixed precision; weights, losses and scores stay float32, scores are
    returned as float64). ``"float16"`` also scales the loss
    (``torch.amp.GradScaler``) so that small gradients do not underflow. Mixed
    precision is for GPUs with fast half-precision units; on the CPU skocc's
    benchmark measured it slower than float32 (float16 many times slower).
    Refused with an error where torch cannot autocast to that precision on
    the device.
random_state : int, RandomState instance or None, default=None
    Seeds the weights' initialisation and the order of the batches. The global
    torch random state is not touched; ``None`` draws the seeds from NumPy's
    global random state, as scikit-learn's estimators do. Same int, same scores
    on the CPU.
verbose : int, default=0
    0 is silent; 1 prints a line per epoch (skorch's ``PrintLog``); 2 also shows
    a progress bar over the batches.
callbacks : list of skorch callbacks or None, default=None
    Extra skorch callbacks, such as ``EarlyStopping(monitor="train_loss")`` or
    ``LRScheduler``. They are copied at every ``fit``; the given objects are
    not changed.
net_params : dict or None, default=None
    Further keyword arguments of :class:`skorch.NeuralNet`, for example
    ``{"train_split": ValidSplit(0.1, random_state=0)}`` to monitor a
    validation loss (seed it, or the split changes between fits), or
    ``{"optimizer": torch.optim.SGD}``. Training uses no validation split
    unless one is given here. Settings that estimator parameters control
    (``callbacks``, ``device``, ``batch_size``, ``max_epochs``, ``lr``,
    ``verbose``, the module, loss and iterators) are refused with an error.""",
    "diversity_params": """
diversity : {None, "direct", "det", "logdet"}, default=None
    Feature-diversity regulariser (WLD-Reg) over the units of the latent
    layer, added to the batch loss. With ``phi_n`` the activations of unit
    ``n`` over a batch and ``s_nm = exp(-diversity_gamma * ||phi_n - phi_m||^2)``:
    ``"direct"`` adds ``sum_{n != m} s_nm``, ``"det"`` adds ``-det(S)`` and
    ``"logdet"`` adds ``-log det(S + 1e-4 I)`` (see
    :func:`skocc.losses.feature_diversity`). Follows the description in
    Laakom et al., "WLD-Reg: a data-dependent within-layer diversity
    regularizer", AAAI 2023.
diversity_weight : float, default=0.1
    Weight of the diversity term; 0 (or ``diversity=None``) turns it off.
diversity_gamma : float, default=1.0
    ``gamma`` of the Gaussian similarity between units.""",
    "threshold_params": """
contamination : float, default=0.05
    The share of new *normal* images that ``predict`` may flag -1 (false
    alarms), in (0, 0.5]. Sets ``offset_``: with ``calibration="holdout"``,
    the split-conformal quantile of the scores of normal images held out of
    training, so that a new normal image exchangeable with them is flagged
    with probability at most ``contamination`` (and close to it); see the user
    guide, "Thresholds you can trust". The autoencoders' two-term score types
    standardise with statistics of those same images, and score each of them
    with the statistics of the others: the bound is then approximate (n - 1
    images against n), and :meth:`calibrate` with new images makes it exact.
calibration : {"holdout", "train"}, default="holdout"
    Where the threshold comes from. ``"holdout"``: ``fit`` holds out
    ``calibration_size`` of the (inlier) training images, drawn with
    ``random_state``, trains on the rest and calibrates ``offset_`` on the
    held-out ones. ``"train"``: scikit-learn's definition, the
    ``contamination`` quantile of the training scores, on a model trained on
    every image; a deep model scores its own training images better than new
    ones, so this flags more than ``contamination`` of new normal images, by
    an amount that depends on the model and the data. Either way,
    ``calibrate(X)`` re-sets the threshold from new normal images.
calibration_size : float, default=0.2
    Share of the training images held out for ``calibration="holdout"``, in
    (0, 0.5]. At least ``ceil(1 / contamination - 1)`` images (19 for 0.05, 99
    for 0.01) are held out, the fewest for which the conformal threshold
    exists; when that would leave fewer training than held-out images,
    nothing is held out, ``offset_`` is the training quantile and a
    :class:`~skocc.conformal.CalibrationWarning` says so.
inlier_label : int, float, str, bool or None, default=None
    ``None``: ``fit`` ignores ``y``, as scikit-learn's outlier detectors do.
    Otherwise ``fit(X, y)`` trains only on the samples with
    ``y == inlier_label`` (and needs ``y``). Set it, for example to ``1``, when
    searching with :class:`~sklearn.model_selection.GridSearchCV` on labelled
    validation data: the CV splitters of :mod:`skocc.model_selection` keep
    anomalies out of the training folds, and this keeps them out of the final
    refit on all the data.""",
    "fitted_attributes": """
net_ : skocc._engine.OneClassNet
    The fitted skorch net; ``net_.module_`` is the PyTorch module and
    ``net_.history`` holds the losses of every epoch and batch.
offset_ : float
    Threshold on ``score_samples``: ``decision_function = score_samples -
    offset_``.
calibration_scores_ : ndarray of shape (n_calibration,)
    Sorted ``score_samples`` of the images ``offset_`` was calibrated on (the
    held-out images, those given to ``calibrate``, or the training images
    with ``calibration="train"``): the reference of ``pvalues``.
device_ : str
    Device the network lives on.
image_shape_ : tuple of int
    ``(C, H, W)`` (``(V, C, H, W)`` with views) of the samples given to ``fit``,
    after reading their layout.
input_shape_ : tuple of int
    The same after resizing to ``resolution``: what the network sees.
n_features_in_ : int
    Number of values per sample seen in ``fit`` (the product of
    ``image_shape_``).
feature_names_in_ : ndarray of shape (`n_features_in_`,)
    Column names, when ``fit`` was given a DataFrame with string column names.
n_epochs_ : int
    Epochs completed.""",
}


def fill_doc(obj):
    """Replace ``{{name}}`` placeholder lines in ``obj.__doc__`` with shared text."""
    doc = obj.__doc__
    if doc is None:  # python -OO
        return obj

    def _sub(match):
        indent, name = match.group(1), match.group(2)
        text = _SHARED[name].strip("\n")
        return "\n".join(indent + line if line else line for line in text.split("\n"))

    obj.__doc__ = re.sub(r"^([ \t]*)\{\{(\w+)\}\}$", _sub, doc, flags=re.MULTILINE)
    return obj


def with_defaults(**defaults):
    """Class decorator: rewrite ``default=...`` of shared parameter entries.

    For an estimator whose defaults differ from the shared text, e.g.
    ``@with_defaults(max_epochs=10)`` above ``@fill_doc``.
    """

    def decorate(obj):
        doc = obj.__doc__
        if doc is None:  # python -OO
            return obj
        for name, value in defaults.items():
            pattern = rf"^([ \t]*{name} : [^\n]*default=)[^\n]*$"
            doc, n = re.subn(pattern, lambda m: m.group(1) + repr(value), doc, flags=re.MULTILINE)
            if n != 1:
                raise ValueError(f"{obj.__name__}'s docstring has no single entry for {name!r}.")
        obj.__doc__ = doc
        return obj

    return decorate
