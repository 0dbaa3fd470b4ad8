"""
Thresholds you can trust: held-out calibration, p-values and the FDR
====================================================================

``predict`` promises to flag at most ``contamination`` of new normal images.
This example measures that promise on digits the models never saw, for
scikit-learn's training-score threshold (``calibration="train"``) and for
skocc's default (``calibration="holdout"``: the threshold comes from normal
images held out of training). It then uses conformal p-values to flag a
batch with a controlled false-discovery rate.
"""

# %%
# Data and models
# ---------------
# For each of four digits, the same autoencoder is trained twice on the
# training images of that digit: once with the training-score threshold, once
# with the default held-out threshold. The test images of the digit are new
# normal images; the false-positive rate is the share of them ``predict``
# flags. Few epochs keep the example fast.
import matplotlib.pyplot as plt
import numpy as np

from skocc import ConvAEOneClass
from skocc.conformal import benjamini_hochberg
from skocc.datasets import one_class_digits_split

X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
digits = [1, 3, 5, 8]
rates = {"train": [], "holdout": []}
for digit in digits:
    for calibration in rates:
        model = ConvAEOneClass(max_epochs=30, calibration=calibration, random_state=0)
        model.fit(X_train[y_train == digit])
        flagged = model.predict(X_test[y_test == digit]) == -1
        rates[calibration].append(flagged.mean())
        print(f"digit {digit}, calibration={calibration!r:9}: flags {flagged.mean():5.1%} "
              f"of {flagged.size} new normal images")

# %%
# The promise, measured
# ---------------------
# The dashed line is ``contamination`` (5 %). A threshold on the training
# scores is optimistic by an amount that changes from digit to digit; the
# held-out threshold is near the line. With about 35 test images per digit,
# each bar is itself uncertain by a few points.
x = np.arange(len(digits))
_, ax = plt.subplots(figsize=(6, 3.5))
ax.bar(x - 0.2, rates["train"], width=0.4, label='calibration="train"')
ax.bar(x + 0.2, rates["holdout"], width=0.4, label='calibration="holdout" (default)')
ax.axhline(0.05, color="k", linestyle="--", linewidth=1, label="contamination")
ax.set_xticks(x, [f"digit {d}" for d in digits])
ax.set_ylabel("new normal images flagged")
ax.legend()
plt.show()

# %%
# P-values and a batch with a controlled false-discovery rate
# -----------------------------------------------------------
# ``pvalues`` compares each image's score with the calibration scores: small
# means unusual. A p-value is never below ``1 / (n + 1)`` for ``n``
# calibration images, and ``fit`` held out only 19 of the 3s here, so the
# model is first re-calibrated with ``calibrate`` on 72 more new 3s. A batch
# of 20 other new 3s and 20 other digits is then flagged with the
# Benjamini–Hochberg procedure at a false-discovery rate of 10 %: in
# expectation, at most 10 % of the flagged images are normal.
model = ConvAEOneClass(max_epochs=30, random_state=0).fit(X_train[y_train == 3])
new_threes = X_test[y_test == 3]
model.calibrate(new_threes[20:])
normal, other = new_threes[:20], X_test[y_test != 3][:20]
batch = np.concatenate([normal, other])
p = model.pvalues(batch)
flagged = benjamini_hochberg(p, fdr=0.1) == -1
print(f"flagged {flagged.sum()} of {len(batch)}: {flagged[20:].sum()} of the 20 other digits "
      f"and {flagged[:20].sum()} of the 20 new 3s")

_, ax = plt.subplots(figsize=(6, 3))
ax.scatter(np.arange(20), p[:20], label="new 3s (normal)")
ax.scatter(np.arange(20, 40), p[20:], label="other digits")
ax.scatter(np.flatnonzero(flagged), p[flagged], facecolors="none", edgecolors="k", s=120,
           label="flagged (FDR 10 %)")
ax.set_yscale("log")
ax.set_ylabel("conformal p-value")
ax.set_xlabel("image in the batch")
ax.legend(fontsize=8)
plt.show()
