"""
Reconstructions and per-pixel anomaly maps
==========================================

An autoencoder trained on normal images reconstructs what it has learnt to
expect. :meth:`~skocc.ConvAEOneClass.reconstruct` shows that expectation, and
:meth:`~skocc.ConvAEOneClass.score_map` shows, pixel by pixel, where an image
departs from it: the anomaly map. This example trains on the digit 0, then
looks at other digits and at zeros with a constructed defect, a bright square
painted onto held-out images.
"""

# %%
# Train on zeros.
import matplotlib.pyplot as plt
import numpy as np

from skocc import ConvAEOneClass
from skocc.datasets import one_class_digits_split
from skocc.plotting import plot_anomaly_maps, plot_reconstructions

X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
model = ConvAEOneClass(max_epochs=40, random_state=0).fit(X_train[y_train == 0])

# %%
# Reconstructions
# ---------------
# Four held-out zeros, then four other digits. The zeros come back close to
# themselves; the other digits come back looking like zeros, because a zero is
# all the decoder has learnt to draw.
zeros, others = X_test[y_test == 0], X_test[y_test != 0]
mixed = np.concatenate([zeros[:4], others[:4]])
fig = plot_reconstructions(model, mixed)
fig.suptitle("Held-out zeros (left) and other digits (right)")
plt.show()

# %%
# A constructed defect
# --------------------
# Paint a 3 x 3 bright square at a random place on each of 30 held-out zeros.
# The anomaly map is the reconstruction error of every pixel at the input's
# resolution (``score_map``); the titles are each image's ``score_samples``
# (higher = more normal).
rng = np.random.default_rng(0)
clean = zeros[:30]
damaged = clean.copy()
corners = rng.integers(0, 6, size=(len(damaged), 2))
for image, (row, col) in zip(damaged, corners):
    image[row : row + 3, col : col + 3] = 1.0

maps_clean, maps_damaged = model.score_map(clean), model.score_map(damaged)
vmax = float(maps_damaged.max())  # one colour scale for both figures


def titles(images):
    return [f"{s:.2f}" for s in model.score_samples(images[:8])]


fig = plot_anomaly_maps(model, clean, vmax=vmax, titles=titles(clean))
fig.suptitle("Held-out zeros")
fig = plot_anomaly_maps(model, damaged, vmax=vmax, titles=titles(damaged))
fig.suptitle("The same zeros with a painted square")
plt.show()

# %%
# Does the map point at the square? Compare the map of every damaged image
# with the map of its clean original: how much did the error grow inside the
# square, how much elsewhere, and is the pixel whose error grew most inside
# the square?
inside = np.zeros(damaged.shape, dtype=bool)
for mask, (row, col) in zip(inside, corners):
    mask[row : row + 3, col : col + 3] = True
excess = maps_damaged - maps_clean
peak_inside = [m.flat[e.argmax()] for m, e in zip(inside, excess)]
print(f"mean error increase inside the square: {excess[inside].mean():.3f}, "
      f"outside: {excess[~inside].mean():.3f}")
print(f"largest increase inside the square for {np.sum(peak_inside)} of {len(damaged)} images")

# %%
# Other digits
# ------------
# For a digit that is not a zero, the map lights up wherever the digit's
# strokes differ from the zero the decoder draws instead.
fig = plot_anomaly_maps(model, others, vmax=vmax, titles=titles(others))
fig.suptitle("Other digits")
plt.show()
