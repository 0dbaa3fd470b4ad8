"""Per-sample losses and anomaly scores (public home of :mod:`skocc.nn.losses`).

The functions live in :mod:`skocc.nn.losses`, beside the networks and the
objectives (:mod:`skocc.nn.objectives`) that train and score with them; they
are listed here too, under the name the documentation has always used.
"""

from .nn.losses import (  # noqa: F401
    DIVERSITIES,
    NORMS,
    __all__,
    autoencoder_loss,
    feature_diversity,
    latent_norm,
    nt_xent,
    per_view_reconstruction_error,
    reconstruction_error,
    rotation_loss,
)
