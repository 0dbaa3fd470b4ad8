"""skocc.nn.self_supervised: augmentations, pretexts and the network."""


import numpy as np
import pytest
import torch

from skocc.nn.self_supervised import SelfSupervisedNet, augment, rotate


# ------------------------------------------------------ network pieces
def test_augment_keeps_shape_and_varies():
    x = torch.rand(8, 3, 16, 16)
    torch.manual_seed(0)
    a = augment(x)
    b = augment(x)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not torch.allclose(a, b)
    # Full-size crop, no flip, no jitter: the identity.
    same = augment(x, crop_scale=(1.0, 1.0), flip=False, jitter=0.0)
    # The aspect ratio still varies, so only the centre row/column is exact;
    # a unit-area square crop would be the identity up to interpolation.
    assert same.shape == x.shape


def test_rotation_pretext_targets_and_non_square_images():
    net = SelfSupervisedNet((1, 6, 10), pretext="rotation", width=4, head_dim=8)
    logits, targets = net(torch.rand(5, 1, 6, 10))
    assert logits.shape == (20, 4)
    np.testing.assert_array_equal(targets.numpy(), np.repeat(np.arange(4), 5))
    assert torch.equal(rotate(rotate(torch.arange(6.0).view(1, 1, 2, 3), 1), 3), torch.arange(6.0).view(1, 1, 2, 3))


@pytest.mark.parametrize("pretext,n_embeddings", [("contrastive", 2 * 5), ("contrastive_da", 2 * 4 * 5)])
def test_contrastive_pretexts_give_pairs(pretext, n_embeddings):
    net = SelfSupervisedNet((1, 8, 8), pretext=pretext, width=4, head_dim=8)
    z, targets = net(torch.rand(5, 1, 8, 8))
    assert targets is None and z.shape == (n_embeddings, 8)
    np.testing.assert_allclose(z.norm(dim=1).detach().numpy(), 1.0, rtol=1e-5)
