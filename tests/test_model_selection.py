"""One-class model selection: splitters, scorers with the right sign, honest search."""

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.metrics import get_scorer, roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_predict, cross_val_score

from skocc import ConvAEOneClass
from skocc.datasets import one_class_digits_split
from skocc.model_selection import (
    AnomalyScorer,
    OneClassKFold,
    OneClassShuffleSplit,
    anomaly_scorers,
    precision_at_n_score,
)

from ._settings import FAST


@pytest.fixture(scope="module")
def labelled_digits():
    """Zeros are normal (+1); 30 other digits are labelled anomalies (-1)."""
    X_train, _, y_train, _ = one_class_digits_split(random_state=0)
    normal = X_train[y_train == 0]
    anomalies = X_train[y_train != 0][:30]
    X = np.concatenate([normal, anomalies])
    y = np.r_[np.ones(len(normal), dtype=int), -np.ones(len(anomalies), dtype=int)]
    return X, y


class _FixedScores:
    """A fitted 'detector' whose score_samples returns given scores by row index."""

    def __init__(self, normality, method="score_samples"):
        self.normality = np.asarray(normality, dtype=float)
        setattr(self, method, lambda X: self.normality[np.asarray(X)[:, 0].astype(int)])


# ---------------------------------------------------------------- splitters
def _y(n_normal, n_anomaly, rng=None):
    y = np.r_[np.ones(n_normal, dtype=int), -np.ones(n_anomaly, dtype=int)]
    return y if rng is None else rng.permutation(y)


@pytest.mark.parametrize("shuffle", [False, True])
def test_kfold_trains_on_normals_and_partitions_the_data(shuffle):
    y = _y(23, 7, np.random.RandomState(0))
    X = np.zeros((len(y), 3))
    cv = OneClassKFold(3, shuffle=shuffle, random_state=0)
    splits = list(cv.split(X, y))
    assert len(splits) == cv.get_n_splits() == 3
    tested = np.concatenate([test for _, test in splits])
    np.testing.assert_array_equal(np.sort(tested), np.arange(len(y)))  # a partition
    for train, test in splits:
        assert np.all(y[train] == 1)
        assert not set(train) & set(test)
        assert set(train) | set(test) == set(np.flatnonzero(y == 1)) | set(test)
        assert np.sum(y[test] == -1) in (2, 3)  # anomalies spread over the folds
    again = [t.tolist() for _, t in cv.split(X, y)]
    assert again == [t.tolist() for _, t in splits]


def test_shuffle_split_tests_every_anomaly_every_time():
    y = _y(20, 3, np.random.RandomState(1))
    cv = OneClassShuffleSplit(4, test_size=0.25, random_state=0)
    splits = list(cv.split(np.zeros((len(y), 1)), y))
    assert len(splits) == cv.get_n_splits() == 4
    for train, test in splits:
        assert np.all(y[train] == 1) and len(train) == 15
        assert set(np.flatnonzero(y == -1)) <= set(test) and len(test) == 5 + 3
        assert not set(train) & set(test)
    assert splits[0][0].tolist() != splits[1][0].tolist()


def test_other_label_conventions():
    y01 = np.array([0, 0, 0, 0, 1, 1])  # PyOD: 1 = anomaly
    train, test = next(OneClassKFold(2, inlier_label=0, anomaly_label=1).split(y01, y01))
    assert np.all(y01[train] == 0)
    digits = np.array([3, 3, 3, 3, 5, 7, 3, 1])  # one digit normal, the rest anomalies
    for train, _ in OneClassKFold(2, inlier_label=3, anomaly_label=None).split(digits, digits):
        assert np.all(digits[train] == 3)
    words = np.array(["good"] * 4 + ["bad"] * 2)
    for train, _ in OneClassShuffleSplit(2, inlier_label="good", anomaly_label="bad").split(words, words):
        assert np.all(words[train] == "good")


@pytest.mark.parametrize(
    "cv, y, match",
    [
        (OneClassKFold(2), None, "needs y"),
        (OneClassKFold(2), np.array([0, 0, 0, 1, 1]), r"also holds 0.*inlier_label=0, anomaly_label=1"),
        (OneClassKFold(2), np.ones(6), "no anomaly"),
        (OneClassKFold(3), _y(10, 2), "needs at least 3 anomalies; y has 2"),
        (OneClassKFold(3), _y(2, 5), "needs at least 3 normal samples"),
        (OneClassKFold(1), _y(5, 5), "'n_splits' parameter of OneClassKFold"),
        (OneClassShuffleSplit(test_size=1.5), _y(5, 5), "'test_size' parameter"),
        (OneClassShuffleSplit(test_size=5), _y(5, 1), "holds out 5 of the 5 normal samples"),
        (OneClassShuffleSplit(), np.array([1, 1, 2, -1]), "also holds 2"),
    ],
)
def test_splitter_errors(cv, y, match):
    n = 6 if y is None else len(y)
    with pytest.raises(ValueError, match=match):
        list(cv.split(np.zeros((n, 1)), y))


# ---------------------------------------------------------------- scorers
def test_scorers_take_anomalies_as_positive():
    y = np.array([1, 1, 1, 1, -1, -1])
    X = np.arange(6).reshape(-1, 1)
    good = _FixedScores([5, 4, 6, 3, 1, 2])  # anomalies least normal
    bad = _FixedScores([1, 2, 1.5, 0, 5, 6])  # anomalies most normal
    for metric in ("roc_auc", "average_precision", "precision_at_n"):
        assert AnomalyScorer(metric)(good, X, y) == 1.0
        assert AnomalyScorer(metric)(bad, X, y) < 0.5
    assert AnomalyScorer("roc_auc")(bad, X, y) == 0.0
    # Detectors without score_samples are ranked by decision_function.
    assert AnomalyScorer()(_FixedScores([5, 4, 6, 3, 1, 2], "decision_function"), X, y) == 1.0


def test_stock_scorer_flips_with_pyod_labels_and_ours_does_not():
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(size=(60, 2)), rng.normal(1.5, 1, size=(20, 2))]
    y_pm = np.r_[np.ones(60, dtype=int), -np.ones(20, dtype=int)]  # +1 normal, -1 anomaly
    y01 = (y_pm == -1).astype(int)  # PyOD's labels: 1 = anomaly
    forest = IsolationForest(random_state=0).fit(X[y_pm == 1])
    ours = AnomalyScorer("roc_auc")(forest, X, y_pm)
    assert ours == pytest.approx(roc_auc_score(y_pm == -1, -forest.score_samples(X)))
    assert 0.6 < ours < 0.99
    stock = get_scorer("roc_auc")
    assert stock(forest, X, y_pm) == pytest.approx(ours)  # +1/-1: right, by luck
    assert stock(forest, X, y01) == pytest.approx(1 - ours)  # 0/1: silently flipped
    assert AnomalyScorer("roc_auc", inlier_label=0, anomaly_label=1)(forest, X, y01) == ours
    with pytest.raises(ValueError, match="inlier_label=0, anomaly_label=1"):
        AnomalyScorer("roc_auc")(forest, X, y01)


def test_precision_at_n():
    # N = 2 anomalies; the top two anomaly scores are one anomaly and one normal.
    assert precision_at_n_score([1, 0, 1, 0], [0.9, 0.8, 0.1, 0.2]) == 0.5
    assert precision_at_n_score([True, False, True], [3, 1, 2]) == 1.0
    # Ties are shared out: a constant score gives the proportion of anomalies,
    # whatever the order of the samples.
    assert precision_at_n_score([1, 0, 0, 0], np.zeros(4)) == 0.25
    assert precision_at_n_score([0, 0, 0, 1], np.zeros(4)) == 0.25
    with pytest.raises(ValueError, match="at least one anomaly"):
        precision_at_n_score([0, 0], [1, 2])


def test_bad_metric_name():
    with pytest.raises(ValueError, match="'metric' parameter of AnomalyScorer"):
        AnomalyScorer("auc")(_FixedScores([1, 2]), np.arange(2).reshape(-1, 1), [1, -1])


# ---------------------------------------------------------------- inlier_label
def test_inlier_label_trains_on_normals_only(labelled_digits):
    X, y = labelled_digits
    labelled = ConvAEOneClass(**FAST, inlier_label=1).fit(X, y)
    plain = ConvAEOneClass(**FAST).fit(X[y == 1])
    np.testing.assert_array_equal(labelled.score_samples(X), plain.score_samples(X))
    assert labelled.offset_ == plain.offset_
    # Without inlier_label, y is ignored (scikit-learn's contract).
    ignored = ConvAEOneClass(**FAST).fit(X, y)
    np.testing.assert_array_equal(ignored.score_samples(X), ConvAEOneClass(**FAST).fit(X).score_samples(X))
    words = np.where(y == 1, "good", "bad")
    by_word = ConvAEOneClass(**FAST, inlier_label="good").fit(X, words)
    np.testing.assert_array_equal(by_word.score_samples(X), plain.score_samples(X))


@pytest.mark.parametrize(
    "y, match",
    [
        (None, r"inlier_label=1\) trains only on the samples .* called without y"),
        ("wrong length", "inconsistent numbers of samples"),
        ("no inlier", r"No sample has y == inlier_label=1.*labels -1.0, 0.0"),
    ],
)
def test_inlier_label_errors(y, match):
    X = np.random.RandomState(0).rand(10, 8, 8)
    y = {"wrong length": np.ones(9), "no inlier": np.r_[np.zeros(5), -np.ones(5)]}.get(y, y)
    with pytest.raises(ValueError, match=match):
        ConvAEOneClass(**FAST, inlier_label=1).fit(X, y)


def test_inlier_label_constraint():
    with pytest.raises(ValueError, match="'inlier_label' parameter of ConvAEOneClass"):
        ConvAEOneClass(**FAST, inlier_label=[1]).fit(np.zeros((4, 8, 8)), np.ones(4))


# ---------------------------------------------------------------- honest search
def test_grid_search_with_splitter_scorer_and_normal_only_refit(labelled_digits):
    X, y = labelled_digits
    search = GridSearchCV(
        ConvAEOneClass(**FAST, inlier_label=1),
        {"beta": [0.0, 1.0], "resolution": [None, 12]},
        cv=OneClassKFold(2, shuffle=True, random_state=0),
        scoring=anomaly_scorers(),
        refit="roc_auc",
    ).fit(X, y)
    results = search.cv_results_
    assert len(results["params"]) == 4
    for metric in ("roc_auc", "average_precision", "precision_at_n"):
        scores = results[f"mean_test_{metric}"]
        assert np.all((scores >= 0) & (scores <= 1))
    # Two epochs: a plumbing check, well above chance (learning is tested elsewhere).
    assert search.best_score_ == results["mean_test_roc_auc"].max() > 0.6
    # The refit trained on the zeros only: the same as fitting them directly.
    direct = ConvAEOneClass(**FAST, **search.best_params_).fit(X[y == 1])
    np.testing.assert_array_equal(search.best_estimator_.score_samples(X), direct.score_samples(X))


def test_splitters_work_with_sklearn_helpers(labelled_digits):
    X, y = labelled_digits
    model = ConvAEOneClass(**FAST)
    scores = cross_val_score(model, X, y, cv=OneClassShuffleSplit(2, random_state=0), scoring=AnomalyScorer())
    assert scores.shape == (2,) and np.all(scores > 0.5)
    # OneClassKFold's test folds are a partition, which cross_val_predict requires.
    labels = cross_val_predict(model, X, y, cv=OneClassKFold(2))
    assert labels.shape == y.shape and set(labels.tolist()) <= {-1, 1}
    assert np.mean(labels[y == -1] == -1) > np.mean(labels[y == 1] == -1)
