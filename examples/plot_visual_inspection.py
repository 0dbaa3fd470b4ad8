"""
Visual inspection: CutPaste features, thresholds and anomaly maps
=================================================================

Surface inspection asks two questions of every photograph of a part: is it
defective, and where? A two-stage model with CutPaste features answers both.
The network learns what intact surfaces look like by telling them apart from
copies with a patch of themselves cut and pasted elsewhere, or a thin "scar"
pasted in (:class:`~skocc.SelfSupervisedFeatures` with
``pretext="cutpaste"``); a Gaussian on its pooled features scores images, and
Gaussians on its spatial feature map give the anomaly map
(:meth:`~skocc.TwoStageOneClass.score_map`).

The images here are made in the example: cells with a grid of thin bright
lines on a noisy background, like the fingers of a solar cell, and two kinds
of defects, a dark crack and a dark spot.
"""

# %%
# Made-up cells
# -------------
import matplotlib.pyplot as plt
import numpy as np

from skocc import SelfSupervisedFeatures, TwoStageOneClass
from skocc.metrics import anomaly_roc_auc
from skocc.plotting import plot_anomaly_maps

SIDE = 32
rng = np.random.default_rng(0)


def cells(n):
    """Noisy cells with bright horizontal fingers every 4 pixels, at a random offset."""
    images = 0.45 + 0.05 * rng.standard_normal((n, SIDE, SIDE))
    for image, offset in zip(images, rng.integers(0, 4, size=n)):
        image[offset::4] += 0.3
    return np.clip(images, 0, 1).astype(np.float32)


def with_defects(images):
    """A crack (a dark diagonal line) in even images, a dark spot in odd ones; and the masks."""
    out, masks = images.copy(), np.zeros(images.shape, bool)
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    for i, (image, mask) in enumerate(zip(out, masks)):
        r, c = rng.integers(6, SIDE - 6, size=2)
        if i % 2 == 0:
            mask[:] = (np.abs((rows - r) - (cols - c)) <= 1) & (np.abs(rows - r) <= 6)
        else:
            mask[:] = (rows - r) ** 2 + (cols - c) ** 2 <= 9
        image[mask] = 0.1
    return out, masks


X_train = cells(300)
normal_test = cells(60)
defective, masks = with_defects(cells(60))

# %%
# Train
# -----
# The rotation ensemble is off: it suits pretexts that learn rotations, and a
# cell turned by 90 degrees is not a normal cell. ``fit`` holds out 20 % of
# the images to set the threshold (``calibration="holdout"``).
model = TwoStageOneClass(
    SelfSupervisedFeatures(pretext="cutpaste", width=8, max_epochs=8, random_state=0),
    rotation_ensemble=False,
    contamination=0.05,
    random_state=0,
).fit(X_train)

X_test = np.concatenate([normal_test, defective])
y_test = np.r_[np.ones(len(normal_test), int), -np.ones(len(defective), int)]  # +1 normal, -1 defect
print(f"image AUROC: {anomaly_roc_auc(y_test, -model.score_samples(X_test)):.3f}")

# %%
# Thresholds
# ----------
# ``predict`` flags images whose score is below ``offset_``, the
# split-conformal quantile of the held-out images' scores: a new normal image
# is flagged with probability at most ``contamination``. ``pvalues`` gives the
# same decision at any level, image by image.
flagged_normal = np.mean(model.predict(normal_test) == -1)
flagged_defective = np.mean(model.predict(defective) == -1)
print(f"flagged: {flagged_normal:.0%} of normal cells, {flagged_defective:.0%} of defective ones")
print("p-values of the first defective cells:", np.round(model.pvalues(defective[:4]), 3))

# %%
# Where: anomaly maps
# -------------------
# The map is the Mahalanobis distance of every location of the encoder's
# feature map to the Gaussian fitted at that location on the training cells,
# resized to the image. It is four times coarser than the image, so it
# outlines a defect rather than tracing it.
fig = plot_anomaly_maps(model, defective, n_images=6)
fig.suptitle("Defective cells: cracks and spots")
plt.show()

maps = model.score_map(defective)
top = [m.ravel()[mask.ravel()].mean() / m.mean() for m, mask in zip(maps, masks)]
print(f"map inside the defects / whole map, median: {np.median(top):.1f}")
