"""
Self-supervised features and several detectors, trained once
============================================================

:class:`skocc.TwoStageOneClass` learns features of the normal images by
self-supervision (:class:`skocc.SelfSupervisedFeatures`), then fits a
classical detector on them. The network is the expensive stage; the
detector is cheap. This example trains the network once and tries four
detectors on its features, through a :class:`~sklearn.pipeline.Pipeline`
whose ``memory`` caches the fitted features step.
"""

# %%
# Data: the normal class is the digit 3; labels follow scikit-learn's outlier
# convention, +1 normal and -1 anomaly.
import tempfile
import time

import joblib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline
from sklearn.svm import OneClassSVM

from skocc import SelfSupervisedFeatures, TwoStageOneClass
from skocc.datasets import one_class_digits_split
from skocc.detectors import GaussianDensity, GaussianKDE

X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
normal_digit = 3
X_normal = X_train[y_train == normal_digit]
y_true = np.where(y_test == normal_digit, 1, -1)

# %%
# One estimator
# -------------
# Contrastive learning with distribution augmentation (the four rotations of
# an image are distinct instances), then an exact Gaussian kernel density on
# the L2-normalised features. Crops keep at least half of the 8 x 8 image and
# there are no flips: a mirrored digit is another shape.
features = SelfSupervisedFeatures(
    pretext="contrastive_da", width=16, max_epochs=10, crop_scale=(0.5, 1.0), flip=False,
    random_state=0,
)
model = TwoStageOneClass(features, detector="kde").fit(X_normal)
print(f"TwoStageOneClass AUROC: {roc_auc_score(y_true, model.score_samples(X_test)):.4f}; "
      f"features {model.features_.transform(X_test[:1]).shape[1]}-d, gamma {model.gamma_:.2f}")

# %%
# Four detectors, one network
# ---------------------------
# With ``memory``, the Pipeline stores the fitted features step keyed on its
# parameters and the data. Only the first fit trains the network; the others
# load it from the cache (``random_state`` is fixed, so the cached network is
# the one each fit would have trained).
detectors = {
    "Gaussian KDE": GaussianKDE(),
    # The gamma TwoStageOneClass chose by Sohn et al.'s rule, 10 / (Var * d).
    "OneClassSVM": OneClassSVM(gamma=model.gamma_, nu=0.1),
    "Gaussian (GDE)": GaussianDensity(),
    "LocalOutlierFactor": LocalOutlierFactor(novelty=True),
}
aurocs, seconds = {}, {}
with tempfile.TemporaryDirectory() as cache:
    memory = joblib.Memory(cache, verbose=0)
    for name, detector in detectors.items():
        start = time.perf_counter()
        pipe = Pipeline([("features", features), ("detector", detector)], memory=memory)
        pipe.fit(X_normal)
        seconds[name] = time.perf_counter() - start
        aurocs[name] = roc_auc_score(y_true, pipe.score_samples(X_test))
        print(f"{name:20s} AUROC {aurocs[name]:.4f}  fit {seconds[name]:.2f} s")

# %%
# The first fit includes training the network; the others only fit their
# detector on cached features.
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.barh(list(aurocs), list(aurocs.values()), color="tab:blue")
for i, name in enumerate(aurocs):
    ax.text(aurocs[name], i, f" {aurocs[name]:.3f} ({seconds[name]:.1f} s)", va="center")
ax.set_xlim(min(aurocs.values()) - 0.05, 1.04)
ax.set_xlabel(f"AUROC, normal digit {normal_digit} against the other digits")
ax.invert_yaxis()
fig.tight_layout()
plt.show()
