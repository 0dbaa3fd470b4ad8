"""Fast settings that make every estimator train in well under a second."""

from skocc import ConvAEOneClass, MultiViewConvAEOneClass, SelfSupervisedFeatures, TwoStageOneClass
from skocc.detectors import GaussianDensity, GaussianKDE

FAST = dict(
    channels=(8, 16),
    latent_dim=4,
    max_epochs=2,
    batch_size=32,
    device="cpu",
    random_state=0,
)


FAST_FEATURES = dict(width=4, head_dim=8, max_epochs=2, batch_size=32, device="cpu", random_state=0)


def fast_features(**params):
    return SelfSupervisedFeatures(**{**FAST_FEATURES, **params})


def fast_estimators():
    return [
        ConvAEOneClass(**FAST),
        MultiViewConvAEOneClass(**FAST),
        fast_features(),
        fast_features(pretext="contrastive_da"),
        fast_features(pretext="cutpaste"),
        TwoStageOneClass(fast_features()),  # gde with the rotation ensemble
        TwoStageOneClass(fast_features(), detector="kde", rotation_ensemble=False),
        TwoStageOneClass(fast_features(), detector="ocsvm", rotation_ensemble=False),
        GaussianKDE(),
        GaussianDensity(),
    ]
