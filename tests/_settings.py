"""Fast settings that make every estimator train in well under a second."""

from skocc import (
    ConvAEOneClass,
    MultiViewConvAEOneClass,
    SelfSupervisedFeatures,
    TwoStageOneClass,
)
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


def modules_loaded_by(statement, modules):
    """Which of ``modules`` a fresh interpreter has imported after running ``statement``."""
    import subprocess
    import sys

    code = f"import sys; {statement}; print(' '.join(m for m in {tuple(modules)!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()
