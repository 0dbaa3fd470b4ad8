"""Chunked scoring on any joblib backend, and search / scoring on a local Dask cluster."""

import numpy as np
import pandas as pd
import pytest
import torch
from joblib import parallel_config
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

from skocc import ConvAEOneClass
from skocc.model_selection import AnomalyScorer, OneClassShuffleSplit
from skocc.parallel import score_in_chunks

from ._settings import FAST


@pytest.fixture(scope="module")
def fitted(digits):
    X_train, _, y_train, _ = digits
    return ConvAEOneClass(**FAST).fit(X_train[y_train == 0])


# ---------------------------------------------------------------- local backends
@pytest.mark.parametrize("method", ["score_samples", "decision_function", "predict", "encode"])
def test_chunks_give_the_same_result(fitted, digits, method):
    X = digits[1]
    expected = getattr(fitted, method)(X)
    # chunk_size a multiple of batch_size (32): the network sees the same batches.
    np.testing.assert_array_equal(score_in_chunks(fitted, X, chunk_size=64, method=method), expected)
    uneven = score_in_chunks(fitted, X, chunk_size=50, method=method)
    assert uneven.shape == expected.shape
    np.testing.assert_allclose(uneven, expected, rtol=1e-5, atol=1e-5)


def test_chunks_on_threads_and_other_inputs(fitted, digits):
    X = digits[1][:100]
    expected = fitted.score_samples(X)
    with parallel_config(backend="threading"):
        np.testing.assert_array_equal(score_in_chunks(fitted, X, chunk_size=32, n_jobs=2), expected)
    np.testing.assert_array_equal(score_in_chunks(fitted, torch.from_numpy(X), chunk_size=32), expected)
    frame = pd.DataFrame(X.reshape(len(X), -1))
    flat = ConvAEOneClass(**FAST, image_shape=(8, 8)).fit(frame)
    np.testing.assert_array_equal(score_in_chunks(flat, frame, chunk_size=32), flat.score_samples(frame))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"chunk_size": 0}, ValueError, "'chunk_size' parameter of score_in_chunks"),
        ({"method": "fit"}, ValueError, "'method' parameter of score_in_chunks"),
        ({"X": np.zeros((0, 8, 8))}, ValueError, "at least one sample"),
        ({"estimator": ConvAEOneClass()}, NotFittedError, "not fitted"),
    ],
)
def test_bad_arguments(fitted, kwargs, error, match):
    arguments = {"estimator": fitted, "X": np.zeros((4, 8, 8)), **kwargs}
    with pytest.raises(error, match=match):
        score_in_chunks(**arguments)


def test_method_must_exist():
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(random_state=0).fit(np.random.RandomState(0).rand(20, 2))
    with pytest.raises(ValueError, match="IsolationForest has no method 'encode'"):
        score_in_chunks(forest, np.zeros((3, 2)), method="encode")


# ---------------------------------------------------------------- Dask
@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    # Worker processes, as on a real cluster: the estimator travels pickled, and
    # each worker has its own torch (the nanny starts it with OMP_NUM_THREADS=1).
    # TCP on the loopback address only; no dashboard.
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.slow
def test_cluster_is_local_with_one_torch_thread_per_worker(dask_client):
    workers = dask_client.scheduler_info()["workers"]
    assert len(workers) == 2
    assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
    assert set(dask_client.run(torch.get_num_threads).values()) == {1}


@pytest.mark.slow
def test_grid_search_on_dask_finds_the_local_best(dask_client, digits):
    from distributed import get_task_stream

    X_train, X_test, y_train, y_test = digits
    X = np.concatenate([X_train[y_train == 0], X_test[y_test != 0][:30]])
    y = np.r_[np.ones(np.sum(y_train == 0), dtype=int), -np.ones(30, dtype=int)]

    def search():
        return GridSearchCV(
            ConvAEOneClass(**FAST, inlier_label=1),
            {"beta": [0.0, 1.0], "resolution": [None, 12]},
            cv=OneClassShuffleSplit(2, random_state=0),
            scoring=AnomalyScorer("roc_auc"),
        )

    local = search().fit(X, y)
    with get_task_stream(dask_client) as stream, parallel_config(backend="dask"):
        remote = search().fit(X, y)
    assert len(stream.data) >= 8  # the 4 x 2 fits ran on the cluster
    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(
        remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"], rtol=1e-6
    )
    np.testing.assert_array_equal(
        remote.best_estimator_.score_samples(X_test), local.best_estimator_.score_samples(X_test)
    )


@pytest.mark.slow
def test_score_in_chunks_on_dask_matches_local(dask_client, fitted, digits):
    X = np.concatenate([digits[0], digits[1]])  # all 1797 digits
    expected = fitted.score_samples(X)
    with parallel_config(backend="dask"):
        np.testing.assert_array_equal(score_in_chunks(fitted, X, chunk_size=256), expected)
    # The model sent to every worker once, not with every chunk.
    with parallel_config(backend="dask", scatter=[fitted]):
        np.testing.assert_array_equal(score_in_chunks(fitted, X, chunk_size=256), expected)


def test_concurrent_scoring_of_one_model_is_safe(digits):
    """Threads scoring one fitted model must not flip its module into train mode.

    Train mode runs the decoder's power iteration, which changed both the scores
    and the stored normalisation vectors when two threads raced (seen as a flaky
    threading-backend test before fitted modules were left in eval mode).
    """
    from concurrent.futures import ThreadPoolExecutor

    X_train, X_test, y_train, _ = digits
    model = ConvAEOneClass(**FAST).fit(X_train[y_train == 0])
    assert not model.net_.module_.training
    buffers = {k: v.clone() for k, v in model.net_.module_.state_dict().items()}
    expected = model.score_samples(X_test)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: model.score_samples(X_test), range(16)))
    for scores in results:
        np.testing.assert_array_equal(scores, expected)
    for key, value in model.net_.module_.state_dict().items():
        assert torch.equal(value, buffers[key]), key
