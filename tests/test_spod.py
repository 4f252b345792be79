"""SPoD: forward model (eq. 3), objective (eq. 5), unrolled nets at init, simulator, training.

The SPoD operators' adjoint and Lipschitz checks live in tests/test_core_operators.py."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from proxscope.checkpoint import build_model, read_checkpoint
from proxscope.errors import UserError
from proxscope.models.spodnet import LISTANet, SPoDNet, SPoDNetConfig
from proxscope.operators import ValidConv
from proxscope.operators.spod import (
    FullSPoDConv,
    SPoDConv,
    core_lam,
    fast_size,
    lam_max,
    normalisation,
    psf_kernel,
    spod_filters,
    spod_objective,
)
from proxscope.prox import leaky_soft_threshold, nonneg_soft_threshold
from proxscope.sim.spod import SPoDSimConfig, forward_model, make_psf, simulate
from proxscope.solvers import ista
from proxscope.tasks.spod.data import prepare, preprocess, random_crops, stack_layout
from proxscope.tasks.spod.metrics import fidelity
from proxscope.tasks.spod.recover import predict_model, recover_stack, solve
from proxscope.train.layerwise import shrink

D = torch.float64


def _psf(a=3, b=4, seed=0):
    return torch.rand(a, b, generator=torch.Generator().manual_seed(seed), dtype=D)


def _brute_forward(x, psf):
    """Eq. (3) with eq. (1) written as loops: y_t[i,j] = Σ φ[i',j'] cos²((t−k)π/c) x_k[i+i',j+j']."""
    c, hh, ww = x.shape
    a, b = psf.shape
    y = np.zeros((c, hh - a + 1, ww - b + 1))
    for t in range(c):
        for i in range(hh - a + 1):
            for j in range(ww - b + 1):
                for k in range(c):
                    w = math.cos((t - k) * math.pi / c) ** 2
                    y[t, i, j] += w * (psf * x[k, i : i + a, j : j + b]).sum()
    return y


def _brute_objective(x, y, psf, lam):
    c, hh, ww = x.shape
    a, b = psf.shape
    big_a, big_b = (hh - a + 1) * (ww - b + 1) * c, hh * ww * c
    r = _brute_forward(x, psf) - y
    return 0.5 / big_a * (r**2).sum() + lam / big_b * np.abs(x).sum()


def test_forward_matches_eq3_loops_and_validconv():
    psf = _psf()
    x = torch.randn(1, 5, 8, 9, dtype=D, generator=torch.Generator().manual_seed(1))
    op = SPoDConv.from_psf(psf, 5)
    expected = _brute_forward(x[0].numpy(), psf.numpy())
    assert np.abs(op(x)[0].numpy() - expected).max() < 1e-12
    assert torch.allclose(ValidConv(spod_filters(psf, 5))(x), op(x), atol=1e-12)
    assert torch.allclose(FullSPoDConv(spod_filters(psf, 5))(x), op(x), atol=1e-12)
    assert torch.equal(op.full_weight(), spod_filters(psf, 5))


def test_factorised_filter_gradcheck():
    g = _psf(3, 3).requires_grad_(True)
    h = torch.rand(3, dtype=D).requires_grad_(True)
    x = torch.randn(1, 3, 6, 5, dtype=D)
    assert torch.autograd.gradcheck(
        lambda g, h: SPoDConv.forward(_Bare(g, h), x), (g, h)
    )


class _Bare(torch.nn.Module):
    """SPoDConv's maths with plain tensors (for gradcheck)."""

    def __init__(self, g, h):
        super().__init__()
        self.g, self.h = g, h

    _spectra = SPoDConv._spectra


def test_fast_size():
    assert fast_size(127) == 128 and fast_size(543) == 576 and fast_size(7) == 8
    assert fast_size(1) == 1 and fast_size(97) == 100


def test_objective_matches_brute_force_and_core_scaling():
    psf = _psf()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(1, 4, 7, 8, dtype=D, generator=gen)
    y = torch.randn(1, 4, 5, 5, dtype=D, generator=gen)
    op = SPoDConv.from_psf(psf, 4)
    lam = 0.7
    value = float(spod_objective(op, x, y, lam)[0])
    assert value == pytest.approx(_brute_objective(x[0].numpy(), y[0].numpy(), psf.numpy(), lam),
                                  rel=1e-12)
    big_a, big_b = normalisation(x.shape, 4, psf.shape)
    assert (big_a, big_b) == (5 * 5 * 4, 7 * 8 * 4)
    core = 0.5 * float(((op(x) - y) ** 2).sum()) + core_lam(lam, x.shape, 4, psf.shape) * float(
        x.sum())
    assert core / big_a == pytest.approx(value, rel=1e-12)
    assert math.isinf(float(spod_objective(op, -x, y, lam)[0]))  # the constraint x >= 0
    # relaxed (no constraint, plain ||x||_1): equal for x >= 0, the brute force for any x
    assert float(spod_objective(op, x, y, lam, relaxed=True)[0]) == pytest.approx(value, rel=1e-12)
    x_mixed = x - 0.5
    assert float(spod_objective(op, x_mixed, y, lam, relaxed=True)[0]) == pytest.approx(
        _brute_objective(x_mixed[0].numpy(), y[0].numpy(), psf.numpy(), lam), rel=1e-12)


def test_fista_and_ista_minimise_eq5_like_lbfgsb():
    from scipy.optimize import minimize

    psf = _psf(3, 3, seed=4)
    gen = torch.Generator().manual_seed(5)
    c, side = 3, 7
    x_true = torch.rand(1, c, side, side, dtype=D, generator=gen) * (
        torch.rand(1, c, side, side, dtype=D, generator=gen) > 0.8)
    op = SPoDConv.from_psf(psf, c)
    y = op(x_true) + 0.01 * torch.randn(1, c, 5, 5, dtype=D, generator=gen)
    lam = 2.0

    def f(v):  # eq. (5) on x >= 0 (l1 = sum) and its gradient, by brute force
        xv = torch.tensor(v.reshape(1, c, side, side), requires_grad=True)
        value = spod_objective(op, xv, y, lam).sum()
        value.backward()
        return float(value.detach()), xv.grad.numpy().ravel()

    ref = minimize(f, np.zeros(c * side * side), jac=True, method="L-BFGS-B",
                   bounds=[(0, None)] * (c * side * side), options={"ftol": 1e-15, "gtol": 1e-12,
                                                                     "maxiter": 5000})
    assert (ref.x > 1e-6).sum() >= 5  # a non-trivial solution
    for method, n_iter, line_search in (("fista", 1000, True), ("ista", 4000, False)):
        result = solve(op, y, lam, method, n_iter=n_iter, tol=1e-13, line_search=line_search)
        assert float(result.x.min()) >= 0
        assert float(result.objective[-1, 0]) == pytest.approx(ref.fun, rel=1e-8)
        assert float(spod_objective(op, result.x, y, lam)[0]) == pytest.approx(
            float(result.objective[-1, 0]), rel=1e-10)
    ista_run = solve(op, y, lam, "ista", n_iter=50, line_search=False)
    assert (ista_run.objective[1:] <= ista_run.objective[:-1] * (1 + 1e-12)).all()


@pytest.mark.parametrize("cls", [SPoDNet, LISTANet])
def test_untrained_nets_are_exactly_m_ista_iterations(cls):
    c, a, tile, m_layers, lam = 4, 5, 10, 4, 0.3
    psf = _psf(a, a, seed=6)
    config = dict(channels=c, n_layers=m_layers, lam=lam, tile=tile)
    net = cls.from_solver(psf, prox="nonneg", **config)
    y = torch.rand(2, c, tile, tile, dtype=D, generator=torch.Generator().manual_seed(7))
    y[..., : tile // 2, :] = 0  # a dark half, where A^T y < θ: LST and NST differ there
    op = SPoDConv.from_psf(psf, c)
    x_shape = (c, tile + a - 1, tile + a - 1)
    step = 1.0 / op.lipschitz(x_shape, bound=True)
    ref = ista(op, y, core_lam(lam, x_shape, c, (a, a)), nonneg_soft_threshold,
               n_iter=m_layers, tol=0.0, step=step)
    with torch.no_grad():
        x = net(y)
        assert float(x.abs().max()) > 0
        assert torch.allclose(x, ref.x, atol=1e-12, rtol=0)
        # LST at init: the same recursion with R̂ (eq. 11), then [x]_+.
        net_lst = cls.from_solver(psf, prox="leaky", **config)
        z = torch.zeros_like(ref.x)
        theta = core_lam(lam, x_shape, c, (a, a)) * step
        for _ in range(m_layers):
            z = leaky_soft_threshold(z - step * op.adjoint(op(z) - y), theta, alpha=0.1)
        assert torch.allclose(net_lst(y), torch.relu(z), atol=1e-12, rtol=0)
        assert not torch.allclose(net_lst(y), x, atol=1e-9, rtol=0)


@pytest.mark.parametrize("threshold", ["leaky", "nonneg"])
def test_training_loss_gradients_survive_a_zeroed_output_only_with_lst(threshold):
    """Sec. 4.2: if every output is zeroed out, NST's gradients vanish; LST's do not. The
    training loss sees x^(M) before [x]_+ (relaxed eq. 9), else [x]_+ would cut LST's too."""
    from proxscope.tasks.spod.train import training_loss

    c, a, tile, lam = 3, 3, 8, 0.1
    psf = _psf(a, a, seed=10)
    net = SPoDNet.from_solver(psf, channels=c, n_layers=2, prox=threshold, lam=lam, tile=tile)
    y = torch.rand(2, c, tile, tile, dtype=D, generator=torch.Generator().manual_seed(11))
    op = SPoDConv.from_psf(psf, c)
    with torch.no_grad():
        for theta in net.unrolled.threshold:
            theta.fill_(10.0)  # far above every signal: the output is all zero
        assert float(net(y).abs().max()) == 0
        x_last = net(y, post_threshold=False)
    params = [p for p in net.parameters() if p.requires_grad]
    loss = training_loss(net, op, y, lam, 2).sum()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    total = sum(float(g.abs().sum()) for g in grads if g is not None)
    if threshold == "leaky":
        assert float(x_last.max()) < 0 and total > 0
        # the same loss on the post-thresholded output has no gradient at all
        cut = training_loss(net, op, y, lam, 2, relaxed=False).sum()
        cut_grads = torch.autograd.grad(cut, params, allow_unused=True)
        assert sum(float(g.abs().sum()) for g in cut_grads if g is not None) == 0
    else:
        assert float(x_last.abs().max()) == 0 and total == 0
    assert float(loss.detach()) == pytest.approx(
        float(spod_objective(op, x_last, y, lam, relaxed=True).sum()))


def test_parameter_counts_seed_sizes():
    spod = SPoDNet(SPoDNetConfig())  # c = 18, 32x32 PSF, M = 10
    lista = LISTANet(SPoDNetConfig())
    assert spod.n_parameters() == 10 * (32 * 32 + 18 + 2)
    assert lista.n_parameters() == 10 * (32 * 32 * 18 * 18 + 2)
    assert len(spod.layer_parameters(3)) == 4


def test_shrink_scales_only_that_layer():
    net = SPoDNet.from_solver(_psf(3, 3).float(), channels=3, n_layers=3, tile=8)
    before = [p.detach().clone() for p in net.parameters()]
    shrink(net, 1, 0.3)
    changed = {id(p) for p in net.layer_parameters(1)}
    for p, old in zip(net.parameters(), before, strict=True):
        expected = old * 0.3 if id(p) in changed else old
        assert torch.allclose(p.detach(), expected)


def test_tiled_prediction_equals_whole_image_for_one_layer():
    a, c = 3, 3
    net = SPoDNet.from_solver(_psf(a, a, seed=8), channels=c, n_layers=1, tile=12)
    y = torch.rand(1, c, 40, 33, dtype=D, generator=torch.Generator().manual_seed(9))
    whole = net(y)
    tiled = predict_model(net, y, tile=12, overlap=4)
    assert tiled.shape == whole.shape == (1, c, 42, 35)
    assert torch.allclose(tiled, whole, atol=1e-12)


def test_simulator_statistics():
    config = SPoDSimConfig(size=40, channels=6, psf_size=9, psf_width=2.5, photons=1e4,
                           read_noise=0.0)
    data = simulate(config, seed=3)
    obs, psf, truth = data["observation"], data["psf"], data["truth"]
    assert obs.shape == (6, 40, 40) and psf.shape == (9, 9) and truth.shape == (6, 48, 48)
    assert psf.sum() == pytest.approx(1, abs=1e-5) and np.unravel_index(psf.argmax(), psf.shape) \
        == (4, 4)
    assert truth.min() >= 0 and 0.001 < (truth > 0).mean() < 0.05  # sparse
    clean = forward_model(truth, psf)
    peak = clean.max()
    # Poisson noise: mean offset = background, variance = peak·(clean/peak + bg)/photons·peak.
    resid = (obs - clean) / peak
    assert resid.mean() == pytest.approx(config.background, abs=2e-3)
    expected_var = ((clean / peak + config.background) / config.photons).mean()
    assert resid.var() == pytest.approx(expected_var, rel=0.1)
    assert np.array_equal(simulate(config, seed=3)["observation"], obs)  # seeded
    assert np.array_equal(make_psf(9, "airy", 2.5), psf)  # PSF independent of the seed
    gauss = make_psf(9, "gaussian", 2.5)
    assert gauss.sum() == pytest.approx(1, abs=1e-5) and gauss.min() > 0


def test_preprocessing_keeps_a_dot_zeroes_a_flat_stack_and_removes_a_hot_pixel():
    psf = make_psf(15, "airy", 3.0)
    x = np.zeros((4, 40, 40), np.float32)
    x[1, 20, 17] = 1.0
    clean = forward_model(x, psf)
    out = preprocess(clean)
    assert out.max() >= 0.9 * clean.max()  # the seed's filters keep ~3 % of it
    assert preprocess(clean, "seed").max() < 0.5 * clean.max()
    flat = np.full((2, 20, 20), 3.0, np.float32)
    assert np.array_equal(preprocess(flat), np.zeros_like(flat))
    spiky = flat + np.random.default_rng(0).normal(0, 0.01, flat.shape).astype(np.float32)
    spiky[0, 10, 10] = 100.0
    assert np.abs(preprocess(spiky)).max() < 0.1
    assert np.array_equal(preprocess(spiky, "none"), spiky)
    assert np.allclose(preprocess(flat, "seed"), 3.0)


def _point_source(c=8, size=48, position=(5, 40, 37), background=0.2, noise=0.01, seed=0):
    """Observation of one unit voxel (PSF 15×15 Airy) over a flat background, with Gaussian
    noise; background and noise as fractions of the clean peak. -> (stack, psf, peak)."""
    psf = make_psf(15, "airy", 3.0)
    x = np.zeros((c, size + 14, size + 14), np.float32)
    x[position] = 1.0
    clean = forward_model(x, psf)
    peak = float(clean.max())
    rng = np.random.default_rng(seed)
    stack = clean + background * peak + rng.normal(0, noise * peak, clean.shape)
    return stack.astype(np.float32), psf, peak


def test_point_source_under_a_flat_background_is_recovered():
    """Issue 15: argmax at the voxel, >= 95 % of the mass within 1 px (the seed's filters: far
    away, 0.4 %)."""
    stack, psf, _ = _point_source()
    x = recover_stack(stack, psf_kernel(psf), n_iter=500).x
    assert np.unravel_index(x.argmax(), x.shape) == (5, 40, 37)
    assert x[:, 39:42, 36:39].sum() >= 0.95 * x.sum()
    assert x.sum() == pytest.approx(1.0, abs=0.05)


def test_pure_noise_with_the_default_lam_recovers_nothing():
    _, psf, peak = _point_source()
    noise = (0.2 * peak + np.random.default_rng(1).normal(0, 0.01 * peak, (8, 48, 48)))
    result = recover_stack(noise.astype(np.float32), psf_kernel(psf), n_iter=500)
    assert result.x.sum() < 1e-3  # one dot's mass is 1
    assert result.lam_ratio > 0.5  # λ_max of noise alone is close to the rule's λ


def test_lam_max_is_where_the_solution_becomes_zero():
    stack, psf, _ = _point_source()
    op = SPoDConv.from_psf(torch.from_numpy(psf_kernel(psf)), 8)
    y = torch.from_numpy(prepare(stack).y)[None]
    top = lam_max(op, y)
    assert float(solve(op, y, top * 1.001, n_iter=50).x.abs().max()) == 0
    assert float(solve(op, y, top * 0.9, n_iter=50).x.max()) > 0


def test_closed_form_lipschitz_bounds_a_1000_step_power_estimate():
    op = SPoDConv.from_psf(torch.from_numpy(psf_kernel(make_psf())).double(), 18)
    shape = (18, 47, 47)
    v = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0), dtype=D)
    for _ in range(1000):
        v = op.normal(v)
        value = float(v.norm())
        v = v / value
    bound = op.lipschitz(shape, bound=True)
    assert bound == pytest.approx(81.0, rel=1e-6)  # (c/2)² for a PSF of sum 1
    assert bound >= value
    assert op.lipschitz(shape) == pytest.approx(value, rel=1e-3)  # Lanczos


def test_asymmetric_psf_lands_right_in_the_convolution_convention():
    """Issue 18.6: a measured PSF whose tail is offset by (+4, +4) from its core. The observation
    is a physical convolution (scipy, independent of our operator)."""
    from scipy.signal import convolve2d

    psf = np.zeros((15, 15), np.float32)
    psf[6:9, 6:9] = 1.0
    psf[10:13, 10:13] = 1.5
    psf /= psf.sum()
    x = np.zeros((6, 50, 50), np.float32)
    x[2, 25, 22] = 1.0
    stack = np.stack([convolve2d(xk, psf, mode="valid") for xk in x]) * np.cos(
        (np.arange(6) - 2) * np.pi / 6)[:, None, None] ** 2
    stack = stack.astype(np.float32) + 0.1
    for convention, right in (("convolution", True), ("correlation", False)):
        rec = recover_stack(stack, psf_kernel(psf, convention), n_iter=300).x
        near = rec[:, 24:27, 21:24].sum() / rec.sum()
        assert (near > 0.9) == right, (convention, near)


def test_stack_layout_reads_channel_last_stacks():
    assert stack_layout((64, 64, 18), channels=18) == "YXC"
    assert stack_layout((18, 64, 64), channels=18) == "CYX"
    assert stack_layout((64, 64, 18)) == "YXC" and stack_layout((18, 64, 64)) == "CYX"
    assert stack_layout((3, 64, 64), channels=18) == "CYX"  # the caller reports 3 vs 18
    assert stack_layout((18, 64, 18), axes="YXC") == "YXC"
    for shape, channels in (((18, 64, 18), 18), ((20, 20, 20), None)):
        with pytest.raises(UserError, match="cannot tell the polarization axis of a stack of "
                           + re.escape(f"shape {tuple(shape)}")):
            stack_layout(shape, channels=channels)


def test_fidelity_scores_the_truth_perfectly_and_a_blank_as_nothing():
    data = simulate(SPoDSimConfig(size=40, channels=6, psf_size=9, psf_width=2.5, n_filaments=2,
                                  n_dots=8), seed=3)
    truth = data["truth"]
    perfect = fidelity(truth, truth, (9, 9))
    assert perfect["dot_f1"] == 1.0 and perfect["within_2px"] == 1.0
    assert perfect["correlation"] == pytest.approx(1.0) and perfect["psnr_db"] == float("inf")
    assert perfect["orientation_error_deg"] == pytest.approx(0.0, abs=1e-9)
    blank = fidelity(np.zeros_like(truth), truth, (9, 9))
    assert blank["dot_f1"] == 0.0 and blank["dot_recall"] == 0.0 and blank["dots_found"] == 0
    assert blank["within_2px"] is None and blank["correlation"] is None
    assert blank["psnr_db"] == blank["psnr_zero_db"]
    shifted = fidelity(np.roll(truth, (6, 6), axis=(1, 2)), truth, (9, 9))  # 8.5 px off
    assert shifted["dot_recall"] < 0.5 and shifted["within_2px"] < 0.5


def test_fista_on_the_demo_stack_matches_the_structures():
    """Issue 15, on the demo seed, FISTA 300 iterations at the noise rule."""
    data = simulate(SPoDSimConfig(size=128), seed=2024)
    rec = recover_stack(data["observation"], psf_kernel(data["psf"]), n_iter=300)
    scores = fidelity(rec.x, data["truth"], data["psf"].shape)
    assert scores["dot_f1"] >= 0.95 and scores["within_2px"] >= 0.95
    assert scores["psnr_db"] >= scores["psnr_zero_db"] + 15
    assert 0 < rec.lam_ratio < 0.05


def test_random_crops_are_crops_or_flips():
    stack = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12)
    crops = random_crops([stack], 5, 4, np.random.default_rng(0))
    assert crops.shape == (5, 2, 4, 4)
    for crop in crops:
        found = any(
            np.array_equal(f(stack[:, i:i + 4, j:j + 4]), crop)
            for i in range(7) for j in range(9)
            for f in (lambda v: v, lambda v: v[:, ::-1], lambda v: v[:, :, ::-1],
                      lambda v: v[:, ::-1, ::-1])
        )
        assert found


def test_checkpoints_load_with_the_former_config_name(tmp_path):
    """Checkpoints that stored ``threshold: 'leaky'`` (now ``prox``) load; a model saved today
    reloads with ``prox``."""
    from proxscope.checkpoint import save_checkpoint

    config = {**SPoDNetConfig(channels=2, psf_size=[3, 3], n_layers=1).__dict__}
    config["threshold"] = config.pop("prox")
    assert SPoDNet.from_config(config).config.prox == "leaky"
    path = save_checkpoint(tmp_path / "m.safetensors", LISTANet.from_solver(
        _psf(3, 3).float(), channels=2, n_layers=1, prox="nonneg", tile=8))
    again = build_model(read_checkpoint(path))
    assert isinstance(again, LISTANet) and again.config.prox == "nonneg"


def test_bundled_net_uses_the_noise_rule_lam_and_its_size_conversion():
    from proxscope.models import load

    model, extra = load("spodnet")
    assert model.config.prox == "leaky" and extra["preprocessing"] == "background"
    a = model.config.psf_size[0]
    lam_core = core_lam(model.config.lam, (18, 64 + a - 1, 64 + a - 1), 18, (a, a))
    assert lam_core == pytest.approx(extra["lam_core"], rel=1e-6)
    lam_128 = model.lam_for((128, 128))
    assert core_lam(lam_128, (18, 128 + a - 1, 128 + a - 1), 18, (a, a)) == pytest.approx(lam_core)
