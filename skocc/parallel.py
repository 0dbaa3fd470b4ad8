"""Scoring large data in chunks, on whatever joblib backend is active.

:func:`score_in_chunks` splits the samples into chunks and hands them to
:class:`joblib.Parallel`. Locally that is a pool of processes or threads; inside
``joblib.parallel_config(backend="dask")`` the chunks run on a Dask cluster
(``pip install "skocc[dask]"``), the same way scikit-learn's ``GridSearchCV``
distributes its fits there. See the user guide's section on distributed search.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.utils.validation import check_is_fitted

from ._sklearn_compat import Interval, StrOptions, num_samples, validate_params

__all__ = ["score_in_chunks"]

#: Methods :func:`score_in_chunks` can apply: one row of output per sample.
CHUNKABLE_METHODS = (
    "score_samples",
    "decision_function",
    "predict",
    "anomaly_score",
    "encode",
    "transform",
)


def _apply(estimator, method, chunk):
    return getattr(estimator, method)(chunk)


def _take(X, rows):
    """Rows of arrays, tensors, lists and DataFrames alike."""
    return X.iloc[rows] if hasattr(X, "iloc") else X[rows]


@validate_params(
    {
        "estimator": "no_validation",
        "X": "no_validation",
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "method": [StrOptions(set(CHUNKABLE_METHODS))],
        "n_jobs": [Integral, None],
    },
    prefer_skip_nested_validation=True,
)
def score_in_chunks(estimator, X, *, chunk_size=1024, method="score_samples", n_jobs=None):
    """Apply a fitted estimator's scoring method to ``X`` in chunks, in parallel.

    Each chunk of ``chunk_size`` samples is one :mod:`joblib` task, so the work
    runs on the active joblib backend: local processes with ``n_jobs``, or a
    Dask cluster inside ``joblib.parallel_config(backend="dask")``. The
    estimator is pickled with every task (a trusted, same-version
    environment); with Dask, ``parallel_config(backend="dask",
    scatter=[estimator])`` sends it to each worker once instead.

    The result equals ``getattr(estimator, method)(X)``. It is bitwise equal
    when ``chunk_size`` is a multiple of the estimator's ``batch_size`` (the
    network then sees the same batches), and equal to float32 precision
    otherwise.

    Parameters
    ----------
    estimator : fitted estimator
        Any fitted estimator with ``method``, such as a skocc estimator.
    X : array-like, tensor or DataFrame of shape (n_samples, ...)
        Samples, in any layout the estimator accepts.
    chunk_size : int, default=1024
        Samples per task. Larger chunks mean fewer tasks and less overhead;
        smaller ones spread the work over more workers.
    method : {"score_samples", "decision_function", "predict", \
"anomaly_score", "encode", "transform"}, default="score_samples"
        Method to apply.
    n_jobs : int or None, default=None
        Number of parallel tasks, as in scikit-learn: ``None`` means 1 unless
        a ``joblib.parallel_config`` context says otherwise (with the Dask
        backend, ``None`` uses every worker).

    Returns
    -------
    result : ndarray
        The method's output for all samples, in order (shape ``(n_samples,)``,
        or ``(n_samples, latent_dim)`` for ``encode``).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    ValueError
        If ``X`` has no samples or the estimator has no such method.

    Examples
    --------
    >>> import numpy as np
    >>> from skocc import ConvAEOneClass
    >>> from skocc.parallel import score_in_chunks
    >>> X = np.random.RandomState(0).rand(50, 8, 8).astype(np.float32)
    >>> model = ConvAEOneClass(max_epochs=1, batch_size=10, device="cpu", random_state=0).fit(X)
    >>> scores = score_in_chunks(model, X, chunk_size=20)
    >>> bool(np.array_equal(scores, model.score_samples(X)))
    True
    """
    check_is_fitted(estimator)
    if not hasattr(estimator, method):
        raise ValueError(f"{type(estimator).__name__} has no method {method!r} to apply in chunks.")
    n = num_samples(X)
    if n == 0:
        raise ValueError("score_in_chunks needs at least one sample; X has none.")
    chunks = (_take(X, slice(start, start + chunk_size)) for start in range(0, n, chunk_size))
    results = Parallel(n_jobs=n_jobs)(delayed(_apply)(estimator, method, chunk) for chunk in chunks)
    return np.concatenate(results, axis=0)
