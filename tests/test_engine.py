"""The training engine: mixed precision, batch iteration and the GPU data path."""

import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from skorch.callbacks import Callback
from skorch.dataset import Dataset
from torch.utils.data import Subset

import skocc
from skocc import ConvAEOneClass, MultiViewConvAEOneClass
from skocc._engine import TensorBatchIterator
from skocc._runtime import DEVICE_RESIDENT_MAX_BYTES, check_precision, device_resident
from skocc.nn.autoencoder import SpectralNormalized

from ._settings import FAST

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class _RecordConvDtypes(Callback):
    """Records the dtype of the encoder's first convolution output in every training batch."""

    def on_train_begin(self, net, **kwargs):
        self.dtypes = []
        conv = net.module_.encoder.features[0]
        conv.register_forward_hook(lambda module, args, out: self.dtypes.append(out.dtype))


# ------------------------------------------------------------- precision
@pytest.mark.parametrize("precision, dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_precision_sets_the_dtype_of_the_forward_pass(digits, precision, dtype):
    X_train, _, y_train, _ = digits
    recorder = _RecordConvDtypes()
    model = ConvAEOneClass(**FAST, precision=precision, callbacks=[recorder])
    model.fit(X_train[y_train == 0])
    recorded = _fitted_callback(model, _RecordConvDtypes).dtypes
    assert recorded and set(recorded) == {dtype}
    # Losses and scores are reduced in float32 and returned as float64 all the same.
    x, x_hat, z = model.net_.infer(torch.from_numpy(X_train[:4, None]))
    assert x.dtype == x_hat.dtype == z.dtype == torch.float32
    scores = model.score_samples(X_train[:4])
    assert scores.dtype == np.float64 and np.all(np.isfinite(scores))


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_learns_about_as_well(digits, precision):
    X_train, X_test, y_train, y_test = digits
    settings = {**FAST, "max_epochs": 20}
    reference = ConvAEOneClass(**settings).fit(X_train[y_train == 0])
    model = ConvAEOneClass(**settings, precision=precision).fit(X_train[y_train == 0])
    losses = model.net_.history[:, "train_loss"]
    assert losses[-1] < 0.7 * losses[0]
    auroc = roc_auc_score(y_test == 0, model.score_samples(X_test))
    auroc_reference = roc_auc_score(y_test == 0, reference.score_samples(X_test))
    assert auroc > 0.95
    assert abs(auroc - auroc_reference) < 0.02
    # Not bit-identical to float32: the precision was really lowered.
    assert not np.array_equal(model.score_samples(X_test), reference.score_samples(X_test))


def test_float16_scales_the_loss(digits):
    X_train, _, y_train, _ = digits
    model = ConvAEOneClass(**FAST, precision="float16").fit(X_train[y_train == 0])
    scaler = model.net_.grad_scaler_
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert scaler.get_scale() > 1.0
    assert getattr(ConvAEOneClass(**FAST).fit(X_train[:50]).net_, "grad_scaler_", None) is None


def test_float16_gives_callbacks_unscaled_gradients(digits):
    X_train, _, y_train, _ = digits

    class GradNorms(Callback):
        def on_train_begin(self, net, **kwargs):
            self.norms = []

        def on_grad_computed(self, net, named_parameters, **kwargs):
            grads = [p.grad.detach().float().norm() for _, p in named_parameters if p.grad is not None]
            self.norms.append(float(torch.stack(grads).norm()))

    X = X_train[y_train == 0]
    norms = {}
    for precision in ("float32", "float16"):
        # The same single batch in every epoch and weights that (almost) do not
        # move, so both precisions see the same gradients batch for batch; the
        # GradScaler skips the first steps, whose scaled gradients overflow.
        settings = {**FAST, "max_epochs": 8, "batch_size": len(X), "lr": 1e-12}
        model = ConvAEOneClass(**settings, precision=precision, callbacks=[GradNorms()]).fit(X)
        norms[precision] = _fitted_callback(model, GradNorms).norms
    first = next(i for i, n in enumerate(norms["float16"]) if np.isfinite(n))
    # Unscaled: float32's gradient norm up to rounding, not 2**k times it.
    assert norms["float16"][first:] == pytest.approx(norms["float32"][first:], rel=0.01)


def test_multiview_gets_precision_from_the_base(digits):
    X_train, _, y_train, _ = digits
    views = skocc.stack_views(X_train[y_train == 0], X_train[y_train == 0])
    model = MultiViewConvAEOneClass(**FAST, precision="bfloat16").fit(views)
    assert model.net_.precision == "bfloat16"
    assert np.all(np.isfinite(model.score_samples(views[:5])))


def test_spectral_norm_is_computed_in_float32_under_autocast():
    layer = SpectralNormalized(torch.nn.Conv2d(3, 8, 3)).eval()
    expected = layer.sigma()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sigma = layer.sigma()
    assert sigma.dtype == torch.float32
    assert torch.equal(sigma, expected)


def test_unsupported_precision_is_refused_naming_it():
    def autocast_that_warns(device_type, dtype):
        warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.")

    with mock.patch("torch.autocast", autocast_that_warns):
        with pytest.raises(ValueError, match=r"precision='float16' needs torch.autocast to torch.float16"):
            check_precision("float16", "cpu")
    check_precision("float32", "cpu")  # float32 needs no autocast at all


def test_precision_survives_save_and_load(digits, tmp_path):
    X_train, X_test, y_train, _ = digits
    model = ConvAEOneClass(**FAST, precision="bfloat16").fit(X_train[y_train == 0])
    skocc.save(model, tmp_path / "model.skocc")
    loaded = skocc.load(tmp_path / "model.skocc")
    assert loaded.precision == loaded.net_.precision == "bfloat16"
    np.testing.assert_array_equal(loaded.score_samples(X_test), model.score_samples(X_test))


# ------------------------------------------------------------ train mode
def test_every_training_batch_runs_in_train_mode(digits):
    """skocc sets train mode only when it is off; a callback switching it off is undone."""
    X_train, _, y_train, _ = digits

    class EvalAfterEveryBatch(Callback):
        def on_train_begin(self, net, **kwargs):
            self.modes = []
            net.module_.decoder.register_forward_pre_hook(
                lambda module, args: self.modes.append(module.training)
            )

        def on_batch_end(self, net, training=None, **kwargs):
            net.module_.eval()

    model = ConvAEOneClass(**FAST, callbacks=[EvalAfterEveryBatch()]).fit(X_train[y_train == 0][:100])
    modes = _fitted_callback(model, EvalAfterEveryBatch).modes
    n_batches = sum(len(row["batches"]) for row in model.net_.history)
    assert modes[:n_batches] == [True] * n_batches
    assert not any(modes[n_batches:])  # the threshold pass scores in eval mode


# ------------------------------------------------------ batches and device
def _fitted_callback(model, cls):
    """The estimator's fitted copy of the callback of class ``cls``."""
    (callback,) = [cb for _, cb in model.net_.callbacks_ if isinstance(cb, cls)]
    return callback


def _batches(iterator):
    return [xb for xb, _ in iterator]


@pytest.mark.parametrize("shuffle", [False, True])
def test_pin_memory_without_cuda_changes_nothing(shuffle):
    X = torch.arange(50 * 4, dtype=torch.uint8).reshape(50, 4)
    dataset = Subset(Dataset(X), list(range(3, 40)))
    plain = _batches(TensorBatchIterator(dataset, 8, shuffle, torch.Generator().manual_seed(0)))
    with mock.patch("torch.cuda.is_available", return_value=False):
        pinned = _batches(
            TensorBatchIterator(dataset, 8, shuffle, torch.Generator().manual_seed(0), pin_memory=True)
        )
    assert len(plain) == len(pinned) == 5
    for a, b in zip(plain, pinned):
        assert torch.equal(a, b)
    assert torch.equal(torch.cat(plain).sort(dim=0).values, X[3:40])


def test_data_stays_where_it_is_off_cuda():
    X = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    assert device_resident(X, "cpu") is X


def test_large_data_is_not_copied_to_the_gpu_whole():
    X = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)  # 160 bytes
    with mock.patch("torch.cuda.mem_get_info", return_value=(4 * 159, 2**34)) as free:
        assert device_resident(X, "cuda:0") is X
    free.assert_called_once()
    big = mock.Mock(device=torch.device("cpu"), element_size=lambda: 1, nelement=lambda: DEVICE_RESIDENT_MAX_BYTES + 1)
    with mock.patch("torch.cuda.mem_get_info", return_value=(2**40, 2**40)):
        assert device_resident(big, "cuda") is big


@needs_cuda
def test_small_data_is_copied_to_the_gpu_whole():
    X = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    on_gpu = device_resident(X, "cuda")
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.uint8


@needs_cuda
def test_cpu_batches_are_pinned_for_cuda():
    X = torch.zeros(20, 1, 4, 4, dtype=torch.uint8)
    for shuffle in (False, True):
        batches = _batches(TensorBatchIterator(Dataset(X), 8, shuffle, pin_memory=True))
        assert all(xb.is_pinned() for xb in batches)


@needs_cuda
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_cuda_fit_and_score(digits, precision):
    X_train, X_test, y_train, y_test = digits
    model = ConvAEOneClass(**{**FAST, "max_epochs": 20, "device": "cuda"}, precision=precision)
    model.fit((X_train[y_train == 0] * 255).astype(np.uint8))
    weight = model.net_.module_.encoder.features[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    scores = model.score_samples((X_test * 255).astype(np.uint8))
    assert scores.dtype == np.float64
    assert roc_auc_score(y_test == 0, scores) > 0.95
