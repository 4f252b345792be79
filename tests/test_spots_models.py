"""SpotNet / ConvNet models, detection and evaluation helpers on hand-made cases."""

import numpy as np
import pytest
import torch

from proxscope.checkpoint import build_model, read_checkpoint, save_checkpoint
from proxscope.metrics import pooled_best_threshold
from proxscope.models.spotnet import SpotConvNet, SpotConvNetConfig, SpotNet, crop_kernels
from proxscope.operators import FFTConv, MultiConv2d
from proxscope.prox import nonneg_group_soft_threshold
from proxscope.solvers import apg
from proxscope.tasks.spots.evaluate import pool_scores, score_image
from proxscope.tasks.spots.predict import detect, profiles
from proxscope.tasks.spots.train import crop_sampler


def _gauss_kernels(k=4, size=11):
    r = np.arange(size) - size // 2
    sig = np.linspace(0.8, 3.0, k)[:, None, None]
    g = np.exp(-(r[None, :, None] ** 2 + r[None, None, :] ** 2) / (2 * sig**2))
    return torch.from_numpy(g / g.sum((1, 2), keepdims=True))


def test_spotnet_init_equals_three_apg_iterations():
    kernels = _gauss_kernels()
    y = torch.rand(2, 1, 24, 20) * 50
    net = SpotNet.from_solver(kernels, lam=0.3, in_shape=(24, 20))
    op = MultiConv2d(crop_kernels(kernels.float(), 5))
    step = 1.0 / op.lipschitz((4, 24, 20))
    ref = apg(op, y, 0.3, nonneg_group_soft_threshold, n_iter=3, tol=0.0, step=step, track=False)
    out = net(y)
    assert out.shape == (2, 4, 24, 20)
    torch.testing.assert_close(out, ref.x, rtol=1e-5, atol=1e-5)
    assert float(out.detach().min()) >= 0 and float(out.detach().max()) > 0


def test_spotnet_trainable_parameters_and_gradients():
    net = SpotNet.from_solver(_gauss_kernels(), lam=0.1, in_shape=(16, 16))
    names = {n for n, p in net.named_parameters() if p.requires_grad}
    assert names == {"net.threshold", "net.momentum"} | {f"net.ops.{i}.kernels" for i in range(3)}
    assert net.n_parameters() == 3 * 4 * 25 + 6
    net(torch.rand(1, 1, 16, 16) * 10).pow(2).sum().backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_convnet_layout_and_nonnegative_output():
    net = SpotConvNet(SpotConvNetConfig())
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    n_filters = sum(m.weight.shape[0] * m.weight.shape[1] for m in convs)
    assert n_filters == 6 + 6 * 15 + 30 + 3 * 30
    assert all(m.kernel_size == (5, 5) for m in convs)
    out = net(torch.rand(2, 1, 20, 24) * 255)
    assert out.shape == (2, 30, 20, 24) and float(out.min()) >= 0


@pytest.mark.parametrize("cls", ["spotnet", "convnet"])
def test_checkpoint_round_trip(tmp_path, cls):
    if cls == "spotnet":
        model = SpotNet.from_solver(_gauss_kernels(), lam=0.2, in_shape=(12, 12))
    else:
        model = SpotConvNet(SpotConvNetConfig(n_channels=30))
    path = save_checkpoint(tmp_path / "m.safetensors", model, extra={"threshold": 1.5})
    loaded = build_model(read_checkpoint(path))
    x = torch.rand(1, 1, 12, 12) * 100
    torch.testing.assert_close(loaded(x), model(x))


def test_fftconv_spectral_bound_bounds_the_lipschitz_constant():
    """The APG step bound: above ||A||^2 (power iteration), and close to it for smooth kernels."""
    op = FFTConv(_gauss_kernels(3, 9))
    bound = op.lipschitz((3, 16, 16), bound=True)
    assert op.lipschitz((3, 16, 16)) <= bound * (1 + 1e-6)
    assert bound < 1.2 * op.lipschitz((3, 16, 16))


def test_detect_and_profiles_hand_made():
    maps = np.zeros((3, 10, 12), np.float32)
    maps[:, 2, 3] = [3.0, 0.0, 0.0]  # mean 1
    maps[:, 2, 4] = [0.5, 0.5, 0.5]  # neighbour with a lower mean: not a peak
    maps[:, 7, 9] = [0.0, 6.0, 3.0]  # mean 3
    yx, scores = detect(maps, sigma=0)  # the plain temporal mean (seed Sec. 4)
    assert yx[0].tolist() == [7, 9] and scores[0] == pytest.approx(3.0)
    assert yx.tolist() == [[7, 9], [2, 3]]
    yx2, _ = detect(maps, min_score=2.0, sigma=0)
    assert yx2.tolist() == [[7, 9]]
    per_cell = profiles(maps, np.array([[2, 3], [7, 9]]))
    np.testing.assert_allclose(per_cell, [[3.5, 0.5, 0.5], [0.0, 6.0, 3.0]])


def test_log_detection_splits_blobs_the_mean_merges():
    """Two Gaussian blobs (sigma 2 px) 4 px apart: one maximum of the mean, two of the LoG map
    (sigma 1), at the right places; far apart, both rules find the same two cells."""
    yy, xx = np.mgrid[:21, :21]

    def blob(x0):
        return np.exp(-((yy - 10) ** 2 + (xx - x0) ** 2) / (2 * 2.0**2))

    close = np.stack([blob(8) + blob(12)] * 3).astype(np.float32)
    assert len(detect(close, sigma=0)[0]) == 1
    yx, scores = detect(close, sigma=1.0)
    assert sorted(yx.tolist()) == [[10, 8], [10, 12]] and (scores > 0).all()
    far = np.stack([blob(4) + blob(16)] * 3).astype(np.float32)
    assert sorted(detect(far, sigma=0)[0].tolist()) == sorted(detect(far, sigma=1.0)[0].tolist())


def test_score_image_and_pooled_threshold():
    truth = np.array([[10, 10], [20, 20], [30, 30]])
    yx = np.array([[10, 11], [21, 20], [50, 50], [30, 33]])
    scores = np.array([5.0, 4.0, 3.0, 1.0])
    r = score_image(yx, scores, truth, threshold=3.5, radius=3.0)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 0, 1)
    assert r["f1"] == pytest.approx(0.8)
    # keeping all four: 3 TP (distance exactly 3 counts), 1 FP
    assert r["best_f1"] == pytest.approx(6 / 7) and r["best_threshold"] == pytest.approx(1.0)
    threshold, f1 = pooled_best_threshold([(yx, scores, truth), (yx[:1], scores[:1], truth[:1])], 3.0)
    assert threshold == pytest.approx(1.0) and f1 == pytest.approx(8 / 9)  # TP 4, FP 1, FN 0


def test_pool_scores_sums_counts_and_averages_best_f1():
    results = {"a": {"tp": 2, "fp": 0, "fn": 1, "n_pred": 2, "n_truth": 3, "best_f1": 0.8},
               "b": {"tp": 1, "fp": 1, "fn": 0, "n_pred": 2, "n_truth": 1, "best_f1": 1.0}}
    pooled = pool_scores(results)
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (3, 1, 1)
    assert pooled["f1"] == pytest.approx(6 / 8) and pooled["precision"] == pytest.approx(0.75)
    assert (pooled["n_pred"], pooled["n_truth"]) == (4, 4)
    assert pooled["mean_best_f1"] == pytest.approx(0.9)
    del results["b"]["best_f1"]
    assert "mean_best_f1" not in pool_scores(results)


def test_crop_sampler_batches_keep_image_and_target_aligned():
    """Each crop of the image is the same crop / turn / flip of the target (here: target = the
    image in every channel), in batches of the requested size."""
    rng = np.random.default_rng(0)
    images = [rng.random((20, 24), dtype=np.float32) for _ in range(2)]
    samples = [(im, np.stack([im, 2 * im]), np.zeros((0, 2))) for im in images]
    images_b, targets_b = crop_sampler(samples, crop=8, batch_size=3)(np.random.default_rng(1))
    assert images_b.shape == (3, 1, 8, 8) and targets_b.shape == (3, 2, 8, 8)
    torch.testing.assert_close(targets_b[:, :1], images_b)
    torch.testing.assert_close(targets_b[:, 1:], 2 * images_b)
    whole, _ = crop_sampler(samples, crop=0)(np.random.default_rng(1))
    assert whole.shape == (1, 1, 20, 20)
