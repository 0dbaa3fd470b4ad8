"""
Grid search and scoring on a Dask cluster
=========================================

The same ``GridSearchCV`` as on one machine, with its fits sent to Dask
workers through joblib's Dask backend, then a large array scored in chunks on
the workers with :func:`skocc.parallel.score_in_chunks`. The cluster here is a
``LocalCluster`` on the loopback address (two worker processes, one thread
each); on a real cluster, connect the ``Client`` to its scheduler instead.
Needs ``pip install "skocc[dask]"``.
"""

# %%
import numpy as np
from joblib import parallel_config
from sklearn.model_selection import GridSearchCV

from skocc import ConvAEOneClass
from skocc.datasets import one_class_digits_split
from skocc.metrics import AnomalyScorer
from skocc.model_selection import OneClassShuffleSplit
from skocc.parallel import score_in_chunks


def main():
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("Dask is not installed: skipping (pip install 'skocc[dask]').")
        return

    # %%
    # Labelled validation data: zeros are normal (+1), 30 other digits anomalies (-1).
    X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
    X = np.concatenate([X_train[y_train == 0], X_train[y_train != 0][:30]])
    y = np.r_[np.ones(np.sum(y_train == 0), dtype=int), -np.ones(30, dtype=int)]
    search = GridSearchCV(
        ConvAEOneClass(inlier_label=1, channels=(8, 16), latent_dim=8, max_epochs=5,
                       device="cpu", random_state=0),
        {"beta": [0.1, 1.0], "resolution": [None, 16]},
        cv=OneClassShuffleSplit(2, random_state=0),
        scoring=AnomalyScorer("roc_auc"),
    )

    # %%
    # Worker processes get OMP_NUM_THREADS=1 from Dask's nanny, so each runs
    # torch on one thread and the workers do not compete for cores.
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True,
        protocol="tcp://", host="127.0.0.1", dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        print(f"{len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
        with parallel_config(backend="dask"):
            search.fit(X, y)
        print(f"best parameters on the cluster: {search.best_params_}")

        # %%
        # Score every digit (as a stand-in for a large array) in chunks on the
        # workers; scatter sends the model to each worker once.
        X_all = np.concatenate([X_train, X_test])
        model = search.best_estimator_
        with parallel_config(backend="dask", scatter=[model]):
            scores = score_in_chunks(model, X_all, chunk_size=256)
        same = np.array_equal(scores, model.score_samples(X_all))
        print(f"scored {len(scores)} images on the cluster; identical to local scores: {same}")


if __name__ == "__main__":  # worker processes re-import this file
    main()
