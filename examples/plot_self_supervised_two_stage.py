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
from skocc.detectors import GaussianDensity, GaussianKDE, scaled_gamma

X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
normal_digit = 3
X_normal = X_train[y_train == normal_digit]
y_true = np.where(y_test == normal_digit, 1, -1)

# %%
# One estimator
# -------------
# The defaults: contrastive learning with distribution augmentation (the four
# rotations of an image are distinct instances; crops keep at least half of
# the image, no flips, since a mirrored digit is another shape), then one
# Gaussian on the L2-normalised features, for each quarter turn of the images
# (``rotation_ensemble=True``).
features = SelfSupervisedFeatures(random_state=0)
model = TwoStageOneClass(features).fit(X_normal)
print(f"TwoStageOneClass AUROC: {roc_auc_score(y_true, model.score_samples(X_test)):.4f}; "
      f"{model.features_.transform(X_test[:1]).shape[1]} features, "
      f"{len(model.detectors_)} detectors")

# %%
# Four detectors, one network
# ---------------------------
# With ``memory``, the Pipeline stores the fitted features step keyed on its
# parameters and the data. Only the first fit trains the network; the others
# load it from the cache (``random_state`` is fixed, so the cached network is
# the one each fit would have trained).
detectors = {
    "Gaussian KDE": GaussianKDE(),
    # gamma by Sohn et al.'s rule, 10 / (Var * d) of the training features.
    "OneClassSVM": OneClassSVM(
        gamma=scaled_gamma(model.features_.transform(X_normal)), nu=0.1
    ),
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
# detector on cached features. Each pipeline scores unrotated images only;
# the rotation ensemble of ``TwoStageOneClass`` above adds the three other
# quarter turns.
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.barh(list(aurocs), list(aurocs.values()), color="tab:blue")
for i, name in enumerate(aurocs):
    ax.text(aurocs[name], i, f" {aurocs[name]:.3f} ({seconds[name]:.1f} s)", va="center")
ax.set_xlim(min(aurocs.values()) - 0.05, 1.04)
ax.set_xlabel(f"AUROC, normal digit {normal_digit} against the other digits")
ax.invert_yaxis()
fig.tight_layout()
plt.show()
