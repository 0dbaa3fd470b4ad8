"""scikit-learn's estimator checks over every skocc estimator."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from ._settings import fast_estimators

# Every expected failure carries its reason.
EXPECTED_FAILED_CHECKS = {
    "ConvAEOneClass": {
        "check_methods_subset_invariance": (
            "float32 convolutions give results that depend on the batch composition "
            "at the 1e-6 level (CPU kernels are chosen by batch size); the check "
            "demands agreement to 1e-7"
        ),
    },
}
for _name in ("MultiViewConvAEOneClass", "SelfSupervisedFeatures", "TwoStageOneClass"):
    EXPECTED_FAILED_CHECKS[_name] = EXPECTED_FAILED_CHECKS["ConvAEOneClass"]


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(fast_estimators(), expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
