"""skocc.losses (skocc.nn.losses): per-sample losses against their definitions."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from skocc.losses import feature_diversity, nt_xent


def test_nt_xent_matches_its_definition():
    z = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    loss = nt_xent(z, 0.5).numpy()
    sim = (z @ z.T).numpy() / 0.5
    for i in range(6):
        others = [sim[i, k] for k in range(6) if k != i]
        assert loss[i] == pytest.approx(-(sim[i, (i + 3) % 6] - logsumexp(others)), rel=1e-5)
    with pytest.raises(ValueError, match="even"):
        nt_xent(z[:5])


# ---------------------------------------------------------------- diversity
def _brute_force_similarity(z, gamma):
    batch, d = z.shape
    S = np.empty((d, d))
    for n in range(d):
        for m in range(d):
            S[n, m] = np.exp(-gamma * np.sum((z[:, n] - z[:, m]) ** 2) / batch)
    return S


@pytest.mark.parametrize("units", [5, 40])  # above 25 units torch's cdist changes method
def test_feature_diversity_matches_its_formulas(units):
    z = np.random.RandomState(0).randn(7, units) * 0.3
    S = _brute_force_similarity(z, 0.5)
    t = torch.tensor(z, dtype=torch.float64)
    np.testing.assert_allclose(feature_diversity(t, "direct", 0.5).item(), S.sum() - np.trace(S))
    np.testing.assert_allclose(feature_diversity(t, "det", 0.5).item(), -np.linalg.det(S))
    np.testing.assert_allclose(
        feature_diversity(t, "logdet", 0.5).item(),
        -np.linalg.slogdet(S + 1e-4 * np.eye(units))[1],
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="diversity must be one of"):
        feature_diversity(t, "max")


@pytest.mark.parametrize("kind", ["direct", "det", "logdet"])
def test_feature_diversity_is_differentiable_and_rewards_diverse_units(kind):
    z = (torch.randn(16, 6) * 0.1).requires_grad_()
    penalty = feature_diversity(z, kind)
    penalty.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    alike = torch.ones(16, 6) * 0.2
    diverse = torch.eye(16)[:, :6] * 3
    assert feature_diversity(diverse, kind) < feature_diversity(alike, kind)
