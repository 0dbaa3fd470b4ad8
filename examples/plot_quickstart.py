"""
Quick start: one digit is normal, every other digit is an anomaly
=================================================================

Train :class:`skocc.ConvAEOneClass` on images of one digit from scikit-learn's
bundled digits, score held-out images of all digits, compare the three
anomaly scores of one fitted model with LocalOutlierFactor on raw pixels, and
see where the fitted threshold falls. Runs in a few seconds on a CPU.
"""

# %%
# Data: 8 x 8 images in [0, 1], split into train and test halves. Only the
# training images of one digit are used for fitting: that digit is "normal".
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor

from skocc import ConvAEOneClass
from skocc.datasets import one_class_digits_split
from skocc.plotting import plot_score_distribution

X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
normal_digit = 8
X_normal = X_train[y_train == normal_digit]
print(f"training on {len(X_normal)} images of the digit {normal_digit}")

# %%
# Fit on normal images only; ``y`` is not used.
model = ConvAEOneClass(random_state=0).fit(X_normal)

# %%
# One fitted model, several scores: the default combines the reconstruction
# error and the Mahalanobis distance of the code from the training codes,
# each standardised with the held-out images' statistics; each can be read alone, and so
# can the latent norm, which ranks anomalies as *more* normal (the user guide
# says why). ``score_type`` can be changed after ``fit``; ``offset_`` (the
# threshold of ``predict``) follows it. It is set back before predicting.
is_normal = y_test == normal_digit
fitted_score_type = model.score_type
for score_type in ("reconstruction+mahalanobis", "reconstruction", "mahalanobis", "latent"):
    model.set_params(score_type=score_type)
    auroc = roc_auc_score(is_normal, model.score_samples(X_test))
    print(f"ConvAEOneClass ({score_type:>26}): AUROC {auroc:.3f}")
model.set_params(score_type=fitted_score_type)

lof = LocalOutlierFactor(novelty=True).fit(X_normal.reshape(len(X_normal), -1))
lof_auroc = roc_auc_score(is_normal, lof.score_samples(X_test.reshape(len(X_test), -1)))
print(f"LocalOutlierFactor on pixels                 : AUROC {lof_auroc:.3f}")

# %%
# The threshold: ``fit`` holds 20 % of the normal images out of training and
# sets ``offset_`` so that about ``contamination=0.05`` of new normal images
# are flagged (``calibration="holdout"``). With under a hundred images, the
# 18 held out give a coarse threshold; AUROC measures the ranking alone.
pred = model.predict(X_test)
print(f"flagged {np.mean(pred[~is_normal] == -1):.0%} of other digits and "
      f"{np.mean(pred[is_normal] == -1):.0%} of held-out {normal_digit}s")

# %%
# The held-out scores of both groups, with the threshold ``offset_``: images
# left of the dashed line are predicted -1. Labels follow scikit-learn's
# outlier convention, +1 normal and -1 anomaly.
ax = plot_score_distribution(model, X_test, np.where(is_normal, 1, -1))
ax.set_title(f"ConvAEOneClass trained on {normal_digit}s, held-out digits")
plt.show()
