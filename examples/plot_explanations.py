"""
Explanations beside anomaly maps
================================

An anomaly map (:meth:`~skocc.ConvAEOneClass.score_map`) shows where an image
is unlike the normal ones in the model's own terms; an explanation
(:meth:`~skocc.ConvAEOneClass.explain`) shows which pixels moved the anomaly
score that ``predict`` thresholds: integrated gradients of the score from a
blurred copy of the image. This example makes its own images: smooth
illumination ramps as the normal class, and the same kind of image with a
bright spot as the defect. It trains an autoencoder and a two-stage model on
the normal images and draws images, maps and explanations side by side.
"""

# %%
# Images made here: smooth ramps with a little noise are normal; a bright
# 4 x 4 spot at a random place is the defect.
import matplotlib.pyplot as plt
import numpy as np

from skocc import ConvAEOneClass, SelfSupervisedFeatures, TwoStageOneClass
from skocc.plotting import plot_explanations

rng = np.random.RandomState(0)
side = 16


def ramps(n):
    yy, xx = np.mgrid[:side, :side] / side
    a, b, c = rng.uniform(0.2, 0.6, (3, n, 1, 1))
    images = a + 0.3 * b * xx + 0.3 * c * yy + rng.normal(0, 0.02, (n, side, side))
    return np.clip(images, 0, 1).astype(np.float32)


X_train = ramps(300)
defective = ramps(6)
spot = np.zeros(defective.shape, bool)  # where the defects are
for image, mask in zip(defective, spot):
    r, c = rng.randint(1, side - 5, size=2)
    mask[r : r + 4, c : c + 4] = True
    image[mask] = 1.0

# %%
# An autoencoder. Its anomaly map is the reconstruction error; the
# explanation points at the pixels that raised the score, and its sign says
# which way they pushed it.
autoencoder = ConvAEOneClass(
    channels=(8, 16), latent_dim=8, max_epochs=30, random_state=0
).fit(X_train)
fig = plot_explanations(autoencoder, defective, n_images=6)
fig.suptitle("ConvAEOneClass: images, reconstruction error, explanation")
plt.show()

# %%
# A two-stage model: rotation-prediction features and a Gaussian. Its map is
# the Mahalanobis distance of local features; the explanation differentiates
# the Gaussian's score through the network.
features = SelfSupervisedFeatures(
    pretext="rotation", width=8, head_dim=16, max_epochs=10, random_state=0
)
two_stage = TwoStageOneClass(features, random_state=0).fit(X_train)
fig = plot_explanations(two_stage, defective, n_images=6)
fig.suptitle("TwoStageOneClass: images, feature map distance, explanation")
plt.show()

# %%
# How much of each explanation's positive mass falls on the spot (16 of 256
# pixels, 6 %)?
for name, model in [("autoencoder", autoencoder), ("two-stage", two_stage)]:
    maps = np.clip(model.explain(defective), 0, None)
    share = (maps * spot).sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    print(f"{name}: {np.round(share, 2)}")
