"""skocc.nn.objectives: training loss, score terms and maps come from the same formulas."""

import numpy as np
import pytest
import torch

from skocc.losses import autoencoder_loss, latent_norm, reconstruction_error
from skocc.nn.objectives import (
    SCORE_TYPES,
    AutoencoderObjective,
    LatentGaussian,
    MultiViewAutoencoderObjective,
    SelfSupervisedObjective,
    combine_score_terms,
)

from .._settings import modules_loaded_by

#: softplus(0) and softplus(1).
SP0, SP1 = np.log(2.0), np.log1p(np.e)


def _output(*shape, latent=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=g)
    x_hat = torch.rand(*shape, generator=g)
    z = torch.randn(shape[0], latent * (shape[1] if len(shape) == 5 else 1), generator=g)
    return x, x_hat, z


@pytest.mark.parametrize("norm", ["l2", "squared_l2"])
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_autoencoder_loss_is_its_score_terms_weighted(norm, beta):
    output = _output(6, 2, 5, 5)
    objective = AutoencoderObjective(beta=beta, norm=norm)
    terms = objective.score_terms(output)
    assert terms.shape == (6, 2)
    torch.testing.assert_close(terms[:, 0], reconstruction_error(output[0], output[1], norm))
    torch.testing.assert_close(terms[:, 1], latent_norm(output[2], norm))
    torch.testing.assert_close(objective(output), terms[:, 0] + beta * terms[:, 1])
    torch.testing.assert_close(objective(output), autoencoder_loss(*output, beta, norm))


@pytest.mark.parametrize("norm", ["l2", "squared_l2"])
def test_multi_view_terms_add_up_to_the_loss(norm):
    output = _output(4, 3, 1, 6, 6)  # 4 samples of 3 views
    objective = MultiViewAutoencoderObjective(beta=0.5, norm=norm)
    terms = objective.score_terms(output)
    assert terms.shape == (4, 2 + 2 * 3)
    torch.testing.assert_close(terms[:, 2:5].sum(dim=1), terms[:, 0])
    torch.testing.assert_close(objective(output), terms[:, 0] + 0.5 * terms[:, 1])
    torch.testing.assert_close(objective(output), autoencoder_loss(*output, 0.5, norm))
    if norm == "squared_l2":  # the views' code norms add up to the code's
        torch.testing.assert_close(terms[:, 5:].sum(dim=1), terms[:, 1])


def test_pixel_map_holds_the_reconstruction_error():
    output = _output(3, 2, 7, 9)
    objective = AutoencoderObjective(norm="l2")
    maps = objective.pixel_map(output, (7, 9))
    assert maps.shape == (3, 7, 9)
    torch.testing.assert_close(maps.pow(2).flatten(1).sum(1).sqrt(), objective.score_terms(output)[:, 0])
    assert objective.pixel_map(output, (14, 18)).shape == (3, 14, 18)
    squared = AutoencoderObjective(norm="squared_l2").pixel_map(output, (7, 9))
    torch.testing.assert_close(squared, maps.pow(2))


def test_diversity_penalty_is_batch_level_and_off_by_default():
    output = _output(8, 1, 4, 4)
    assert AutoencoderObjective().batch_penalty(output) == 0.0
    penalty = AutoencoderObjective(diversity="direct", diversity_weight=0.5).batch_penalty(output)
    assert penalty.ndim == 0 and penalty > 0


def test_self_supervised_objective_per_copy():
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(4).repeat(2)
    loss = SelfSupervisedObjective()((logits, targets))
    assert loss.shape == (8,)
    torch.testing.assert_close(
        loss, torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    )
    z = torch.nn.functional.normalize(torch.randn(6, 3), dim=1)
    assert SelfSupervisedObjective(0.5)((z, None)).shape == (6,)


def test_combine_score_terms_on_arrays_and_tensors():
    recon, latent, maha = np.array([1.0, 3.0]), np.array([2.0, 2.0]), np.array([4.0, 0.0])
    mean, std = np.array([1.0, 2.0, 2.0]), np.array([2.0, 1.0, 2.0])
    cases = [
        ("reconstruction", recon),
        ("latent", latent),
        ("mahalanobis", maha),
        # Standardised: reconstruction [0, 1], latent [0, 0], mahalanobis [1, -1].
        ("combined", [2 * SP0**2, SP1**2 + SP0**2]),
        ("reconstruction+mahalanobis", [SP0**2 + SP1**2, SP1**2 + np.log1p(np.exp(-1)) ** 2]),
    ]
    assert {kind for kind, _ in cases} == set(SCORE_TYPES)
    columns = {"reconstruction": 0, "latent": 1, "mahalanobis": 2}
    for kind, expected in cases:
        for to in (np.asarray, torch.as_tensor):
            values = {"reconstruction": recon, "latent": latent, "mahalanobis": maha}
            terms = {name: (to(v), columns[name]) for name, v in values.items()}
            got = combine_score_terms(kind, terms, to(mean), to(std))
            np.testing.assert_allclose(np.asarray(got), expected)


def test_latent_gaussian_is_the_mahalanobis_distance_of_each_block():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 4, generator=g, dtype=torch.float64)
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    covariance = (a @ a.T + torch.eye(4, dtype=torch.float64)).numpy()
    location = np.array([0.5, -1.0, 0.0, 2.0])
    whitening = np.linalg.inv(np.linalg.cholesky(covariance)).T
    second = np.array([2, 3])
    sub = covariance[np.ix_(second, second)]
    gaussian = LatentGaussian(
        [
            (np.arange(4), location, whitening),
            (second, location[second], np.linalg.inv(np.linalg.cholesky(sub)).T),
        ]
    )
    got = gaussian(z.float()).numpy()
    assert got.shape == (7, 2) and gaussian(z).dtype == torch.float64
    diff = z.float().double().numpy() - location
    full = np.sqrt(np.einsum("ni,ij,nj->n", diff, np.linalg.inv(covariance), diff))
    part = np.sqrt(np.einsum("ni,ij,nj->n", diff[:, second], np.linalg.inv(sub), diff[:, second]))
    np.testing.assert_allclose(got[:, 0], full, rtol=1e-10)
    np.testing.assert_allclose(got[:, 1], part, rtol=1e-10)


def test_score_terms_append_the_gaussians_distances():
    output = _output(6, 1, 5, 5, latent=3)
    gaussian = LatentGaussian([(np.arange(3), np.zeros(3), np.eye(3))])
    objective = AutoencoderObjective()
    terms = objective.score_terms(output, gaussian)
    assert terms.shape == (6, 3) and terms.dtype == torch.float64
    torch.testing.assert_close(terms[:, :2], objective.score_terms(output).double())
    # With the identity whitening and zero location, the distance is the code's norm.
    torch.testing.assert_close(terms[:, 2], output[2].double().norm(dim=1))


def test_two_terms_combine_one_sided_without_overflow_and_with_row_statistics():
    columns = {"reconstruction": 0, "mahalanobis": 1}
    mean, std = np.zeros(2), np.ones(2)

    def combine(recon, maha, mean=mean, std=std, to=np.asarray):
        terms = {"reconstruction": (to(recon), 0), "mahalanobis": (to(maha), 1)}
        assert set(terms) == set(columns)
        return np.asarray(
            combine_score_terms("reconstruction+mahalanobis", terms, to(mean), to(std))
        )

    for to in (np.asarray, torch.as_tensor):
        # A term far below its mean does not cancel one far above it, as a sum would.
        high_low, typical = combine([3.0, 0.0], [-3.0, 0.0], to=to)
        assert high_low > 9 > typical
        # Increasing in each term (in float64 from about 18 standard deviations below the mean).
        assert np.all(np.diff(combine(np.linspace(-50, 50, 101), np.zeros(101), to=to)) >= 0)
        assert np.all(np.diff(combine(np.linspace(-15, 50, 66), np.zeros(66), to=to)) > 0)
        # Far outside the normal range: finite, about z ** 2.
        far = combine([1e6, -1e6], [0.0, 0.0], to=to)
        assert np.isfinite(far).all() and far[0] == pytest.approx(1e12) and far[1] < 1
        # Statistics per row (leave-one-out) index the last axis.
        rows = combine(
            [1.0, 1.0], [0.0, 0.0], mean=np.array([[1.0, 0.0], [0.0, 0.0]]),
            std=np.ones((2, 2)), to=to,
        )
        np.testing.assert_allclose(rows, [2 * SP0**2, SP1**2 + SP0**2])


def test_skocc_nn_imports_torch_only():
    statement = "import skocc.nn, skocc.nn.objectives, skocc.nn.losses, skocc.nn.attribution"
    assert modules_loaded_by(statement, ["sklearn", "skorch", "scipy"]) == []
