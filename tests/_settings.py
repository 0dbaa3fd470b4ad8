"""Fast settings that make every estimator train in well under a second."""

from skocc import ConvAEOneClass, MultiViewConvAEOneClass

FAST = dict(
    channels=(8, 16),
    latent_dim=4,
    max_epochs=2,
    batch_size=32,
    device="cpu",
    random_state=0,
)


def fast_estimators():
    return [ConvAEOneClass(**FAST), MultiViewConvAEOneClass(**FAST)]
