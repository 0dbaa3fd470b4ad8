"""Pieces every benchmark shares: the exact KDE baseline and the machine record."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy
import sklearn
import torch
from scipy.spatial.distance import cdist, pdist
from scipy.special import logsumexp

import skocc

REPO_ROOT = Path(__file__).resolve().parents[1]

KDE_RULE = "h = median pairwise Euclidean distance between training points / sqrt(2)"


class ExactGaussianKDE:
    """Gaussian kernel density with the bandwidth rule ``KDE_RULE``, in float64.

    Written here rather than using ``sklearn.neighbors.KernelDensity``, whose
    tree-based approximation returns wrong log-densities at small bandwidths.
    """

    def __init__(self, batch_size=512):
        self.batch_size = batch_size

    def fit(self, X):
        self.X_ = np.asarray(X, dtype=np.float64)
        self.bandwidth_ = float(np.median(pdist(self.X_)) / np.sqrt(2.0))
        return self

    def score_samples(self, X):
        """Log-density of every row of ``X``."""
        X = np.asarray(X, dtype=np.float64)
        n, d = self.X_.shape
        h2 = self.bandwidth_**2
        const = np.log(n) + 0.5 * d * np.log(2.0 * np.pi * h2)
        out = np.empty(X.shape[0])
        for start in range(0, X.shape[0], self.batch_size):
            sq = cdist(X[start : start + self.batch_size], self.X_, "sqeuclidean")
            out[start : start + self.batch_size] = logsumexp(-sq / (2.0 * h2), axis=1)
        return out - const


def git_revision():
    """HEAD, marked when skocc/ has uncommitted changes; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "skocc"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" (skocc/ has uncommitted changes)" if dirty else "")


def environment(**extra):
    """Where and how a benchmark ran, plus ``extra`` settings worth recording."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch_num_threads": torch.get_num_threads(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "skocc": getattr(skocc, "__version__", None),
        "git": git_revision(),
        **extra,
    }


def environment_line(env):
    return (
        f"{env['date']} | OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, torch threads "
        f"{env['torch_num_threads']} | processor {env['processor']!r}, machine {env['machine']}, "
        f"{env['cpu_count']} CPUs | python {env['python']}, torch {env['torch']}, "
        f"sklearn {env['sklearn']}, scipy {env['scipy']}, numpy {env['numpy']}, "
        f"skocc {env['skocc']} (git {env['git']})"
    )
