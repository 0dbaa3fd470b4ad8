"""
Several views of one sample: which view is anomalous?
=====================================================

:class:`skocc.MultiViewConvAEOneClass` scores samples made of several images
of one object, such as two cameras. Besides one score per sample,
:meth:`~skocc.MultiViewConvAEOneClass.score_samples_per_view` says which view
made a sample look anomalous.

The views here are **constructed**, not real multi-camera data: view 0 is a
digit and view 1 is the same digit mirrored left to right, as a second camera
facing the first might see it. Real views differ in more than a mirror; the
example only shows the mechanics on data that ships with scikit-learn.
"""

# %%
# Build two-view samples with :func:`skocc.stack_views`: one array per view
# in, one ``(n, V, C, H, W)`` array out. Train on pairs showing a zero.
import matplotlib.pyplot as plt
import numpy as np

from skocc import MultiViewConvAEOneClass, stack_views
from skocc.datasets import one_class_digits_split
from skocc.plotting import plot_anomaly_maps


def two_views(images):
    return stack_views(images, np.flip(images, axis=2))


X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
train = two_views(X_train[y_train == 0])
print(f"training samples: {train.shape}  (n, views, channels, height, width)")
model = MultiViewConvAEOneClass(max_epochs=30, random_state=0).fit(train)

# %%
# Damage one view
# ---------------
# Take 40 held-out pairs of zeros and paint a bright 3 x 3 square onto *one*
# of their views: view 0 for the first 20, view 1 for the others. The other
# view stays clean, so only one camera "sees" the defect.
rng = np.random.default_rng(0)
clean = two_views(X_test[y_test == 0][:40])
damaged = clean.copy()
damaged_view = np.repeat([0, 1], 20)
for sample, view in zip(damaged, damaged_view):
    row, col = rng.integers(0, 6, size=2)
    sample[view, :, row : row + 3, col : col + 3] = 1.0

# %%
# One score per sample and one per view, higher = more normal. The view with
# the lowest per-view score is the one that made the sample anomalous.
per_view = model.score_samples_per_view(damaged)
blamed = per_view.argmin(axis=1)
print(f"score_samples_per_view shape: {per_view.shape}")
print(f"lowest per-view score on the damaged view: {np.sum(blamed == damaged_view)} "
      f"of {len(damaged)} samples")
print(f"flagged by predict: {np.mean(model.predict(damaged) == -1):.0%} of damaged pairs, "
      f"{np.mean(model.predict(clean) == -1):.0%} of the clean ones")

# %%
# Each dot is a sample, placed by its two per-view scores. Clean pairs sit
# high on both axes; damaging a view pushes the sample down along that view's
# axis.
clean_per_view = model.score_samples_per_view(clean)
_, ax = plt.subplots(figsize=(5.5, 5))
ax.scatter(*clean_per_view.T, label="clean", color="C0")
for view, color in ((0, "C3"), (1, "C1")):
    ax.scatter(*per_view[damaged_view == view].T, label=f"view {view} damaged",
               color=color, marker="x")
ax.set_xlabel("per-view score, view 0 (higher = more normal)")
ax.set_ylabel("per-view score, view 1")
ax.legend()
plt.show()

# %%
# The anomaly maps of both views: two rows per view, the images and their
# per-pixel reconstruction error. Columns 1-3 have a damaged view 0, columns
# 4-6 a damaged view 1.
shown = damaged[[0, 1, 2, 20, 21, 22]]
fig = plot_anomaly_maps(model, shown, titles=[f"view {v} damaged" for v in (0, 0, 0, 1, 1, 1)])
plt.show()
