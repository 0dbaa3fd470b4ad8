"""
Two stages: the autoencoder's codes for a classical detector
============================================================

:class:`skocc.ConvAEOneClass` is also a transformer: ``transform`` (the same
as ``encode``) returns every image's latent code, shape
``(n_samples, latent_dim)``. So it can be the first step of a scikit-learn
:class:`~sklearn.pipeline.Pipeline` whose last step is a classical detector
working on the codes instead of the pixels. This example compares such
two-stage detectors with the autoencoder's own, end-to-end score.
"""

# %%
# Data: the normal class is the digit 8; labels follow scikit-learn's outlier
# convention, +1 normal and -1 anomaly.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from skocc import ConvAEOneClass
from skocc.datasets import one_class_digits_split
from skocc.plotting import plot_roc

X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
normal_digit = 8
X_normal = X_train[y_train == normal_digit]
y_true = np.where(y_test == normal_digit, 1, -1)

# %%
# A two-stage Pipeline
# --------------------
# ``fit`` trains the autoencoder on the images, then LocalOutlierFactor on
# their codes. ``score_samples``, ``decision_function`` and ``predict`` of the
# Pipeline are those of LocalOutlierFactor (``novelty=True`` makes them
# available on new data), with scikit-learn's signs.
two_stage = make_pipeline(
    ConvAEOneClass(max_epochs=30, random_state=0),
    LocalOutlierFactor(novelty=True),
).fit(X_normal)
autoencoder = two_stage[0]
codes = autoencoder.transform(X_test)
print(f"codes: {codes.shape} {codes.dtype}; feature names "
      f"{autoencoder.get_feature_names_out()[:2].tolist()} ...")

# %%
# The fitted first step *is* a fitted ConvAEOneClass, so its end-to-end score
# comes for free. A third detector reuses the same trained encoder:
# :class:`~sklearn.frozen.FrozenEstimator` keeps ``fit`` from training it
# again, and OneClassSVM works on standardised codes.
svm_on_codes = make_pipeline(
    FrozenEstimator(autoencoder), StandardScaler(), OneClassSVM(gamma="scale", nu=0.05)
).fit(X_normal)

# %%
# ROC curves on the held-out digits (anomalies are the positive class; the
# dots are each detector's ``predict`` threshold).
#
# One caveat applies to both two-stage detectors: they are fitted on the codes
# of the images the autoencoder was trained on, which it may encode more
# tightly than unseen normal images. Fitting the second stage on codes of
# normal images held out from the autoencoder's training avoids that, at the
# cost of fewer images for each stage.
_, ax = plt.subplots(figsize=(6, 6))
plot_roc(autoencoder, X_test, y_true, name="ConvAEOneClass (end to end)", ax=ax)
plot_roc(two_stage, X_test, y_true, name="codes + LocalOutlierFactor", ax=ax)
plot_roc(svm_on_codes, X_test, y_true, name="codes + OneClassSVM", ax=ax)
ax.set_title(f"Normal digit {normal_digit}, held-out digits")
plt.show()
