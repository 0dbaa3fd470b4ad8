"""
Score distributions, ROC curves and a calibrated threshold
==========================================================

How well does a one-class detector separate normal images from anomalies, and
where should the threshold go? This example trains
:class:`skocc.ConvAEOneClass` on one digit, draws the held-out score
distributions with the fitted threshold ``offset_``, compares ROC curves with
scikit-learn's detectors on raw pixels, and sets a threshold on normal images
kept out of training.
"""

# %%
# Data: the normal class is the digit 3. A third of its training images is
# kept out of ``fit`` to calibrate the threshold later. Test labels follow
# scikit-learn's outlier convention: +1 normal, -1 anomaly.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import train_test_split
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import OneClassSVM

from skocc import ConvAEOneClass
from skocc.datasets import one_class_digits_split
from skocc.plotting import plot_roc, plot_score_distribution

X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
normal_digit = 3
X_fit, X_calib = train_test_split(
    X_train[y_train == normal_digit], test_size=1 / 3, random_state=0
)
y_true = np.where(y_test == normal_digit, 1, -1)
print(f"{len(X_fit)} images to fit, {len(X_calib)} to calibrate, {len(X_test)} to test")

# %%
# The autoencoder, and three classical detectors on the flattened pixels.
# Few epochs keep the example fast; they are not a tuned setting.
model = ConvAEOneClass(max_epochs=30, random_state=0).fit(X_fit)

flatten = FunctionTransformer(lambda X: X.reshape(len(X), -1))
baselines = {
    "OneClassSVM": make_pipeline(flatten, OneClassSVM(gamma="scale", nu=0.05)),
    "IsolationForest": make_pipeline(flatten, IsolationForest(random_state=0)),
    "LocalOutlierFactor": make_pipeline(flatten, LocalOutlierFactor(novelty=True)),
}
for detector in baselines.values():
    detector.fit(X_fit)

# %%
# Score distributions
# -------------------
# ``score_samples`` is higher for more normal images. The dashed line is
# ``offset_``, set by ``fit`` from the scores of 20 % of ``X_fit`` that it
# held out of training, so that about ``contamination`` (5 %) of new normal
# images fall to its left: ``predict`` flags every image there.
ax = plot_score_distribution(model, X_test, y_true)
ax.set_title(f"ConvAEOneClass, normal digit {normal_digit}")
plt.show()

# %%
# ROC curves
# ----------
# Anomalies are the positive class. The curve shows every threshold at once;
# the dots are the thresholds ``predict`` uses, one per detector.
_, ax = plt.subplots(figsize=(6, 6))
plot_roc(model, X_test, y_true, name="ConvAEOneClass", ax=ax)
for name, detector in baselines.items():
    plot_roc(detector, X_test, y_true, name=f"{name} (pixels)", ax=ax)
ax.set_title("Held-out digits")
plt.show()

# %%
# Re-calibrating on more normal images
# ------------------------------------
# ``fit`` calibrated ``offset_`` on the few images it held out (20 % of
# ``X_fit``). With a few dozen calibration images the threshold is itself
# uncertain, so when more normal images turn up, ``calibrate`` re-sets it
# from them without retraining. A training-score threshold
# (``calibration="train"``) is printed for comparison: the network fits its
# training images more closely than new ones, so it flags more normal images
# than it promises (by how much depends on the data and the training).
train_quantile = ConvAEOneClass(max_epochs=30, calibration="train", random_state=0).fit(X_fit)
scores = model.score_samples(X_test)
thresholds = {"training-score quantile": (train_quantile, train_quantile.offset_)}
thresholds["held out by fit (default)"] = (model, model.offset_)
model.calibrate(X_calib)
thresholds["calibrate(X_calib)"] = (model, model.offset_)
for name, (fitted, threshold) in thresholds.items():
    flagged = fitted.score_samples(X_test) < threshold
    print(f"{name:>26}: threshold {threshold:7.3f}, flags "
          f"{flagged[y_true == 1].mean():4.0%} of normal and "
          f"{flagged[y_true == -1].mean():4.0%} of anomalous test images")

# %%
# The calibrated threshold on the test scores.
ax = plot_score_distribution(model, X_test, y_true)
ax.set_title("After calibrate(X_calib)")
plt.show()
