"""
Grid search on labelled validation data: beta and resolution
=============================================================

Search :class:`skocc.ConvAEOneClass`'s ``beta`` and ``resolution`` with
scikit-learn's ``GridSearchCV``, honestly: the training folds hold only normal
images (:class:`skocc.model_selection.OneClassKFold`), the score takes the
anomalies as the positive class (:class:`skocc.metrics.AnomalyScorer`),
and ``inlier_label=1`` makes the final refit train on the normal images only.
Plots the mean validation AUROC when matplotlib is installed
(``pip install "skocc[plot]"``). Under a minute on a CPU.
"""

# %%
# Data: the digit 8 is normal. The validation data are the 8s of the training
# half plus 30 labelled anomalies (other digits), with y = +1 / -1. The test
# half is kept for the end.
import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV

from skocc import ConvAEOneClass
from skocc.datasets import one_class_digits_split
from skocc.metrics import AnomalyScorer
from skocc.model_selection import OneClassKFold

torch.set_num_threads(1)  # small networks: one thread is fastest on shared CPUs

normal_digit = 8
X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
normal = X_train[y_train == normal_digit]
anomalies = X_train[y_train != normal_digit][:30]
X = np.concatenate([normal, anomalies])
y = np.r_[np.ones(len(normal), dtype=int), -np.ones(len(anomalies), dtype=int)]
print(f"validation data: {len(normal)} normal images, {len(anomalies)} labelled anomalies")

# %%
# The search. Small network and few epochs so that the example stays fast.
betas = [0.1, 1.0, 10.0]
resolutions = [16, 32]
search = GridSearchCV(
    ConvAEOneClass(
        inlier_label=1, channels=(8, 16), latent_dim=16, max_epochs=15, device="cpu", random_state=0
    ),
    {"beta": betas, "resolution": resolutions},
    cv=OneClassKFold(3, shuffle=True, random_state=0),
    scoring=AnomalyScorer("roc_auc"),
)
search.fit(X, y)

mean = search.cv_results_["mean_test_score"].reshape(len(betas), len(resolutions))
std = search.cv_results_["std_test_score"].reshape(len(betas), len(resolutions))
print("mean validation AUROC (std over 3 folds)")
print("beta      " + "".join(f"  resolution={r:<3}" for r in resolutions))
for i, beta in enumerate(betas):
    print(f"{beta:<8}" + "".join(f"  {mean[i, j]:.3f} ({std[i, j]:.3f})" for j in range(len(resolutions))))
print(f"best: {search.best_params_}")

# %%
# The refitted model was trained on the normal images only; judge it once on
# the untouched test half (every digit, the 8s as normal).
best = search.best_estimator_
auroc = roc_auc_score(y_test != normal_digit, best.anomaly_score(X_test))
print(f"test AUROC of the refitted best model: {auroc:.3f}")

# %%
# Plot, when matplotlib is available.
try:
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the figure is saved to a file
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: skipping the plot (pip install 'skocc[plot]').")
else:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for j, resolution in enumerate(resolutions):
        ax.errorbar(betas, mean[:, j], yerr=std[:, j], marker="o", capsize=3, label=f"resolution={resolution}")
    ax.set_xscale("log")
    ax.set_xlabel("beta")
    ax.set_ylabel("mean validation AUROC")
    ax.set_title(f"ConvAEOneClass, digit {normal_digit} normal")
    ax.legend()
    fig.tight_layout()
    fig.savefig("plot_grid_search.png", dpi=100)
    print("saved plot_grid_search.png")
