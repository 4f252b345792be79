"""cells: line encoding, SparseRecovery backward rules, CNNCS variants, simulator, decoding,
training patches, loading of older checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from proxscope.layers.sparse_recovery import (
    SparseRecovery,
    lasso_solver,
    lasso_step,
    sparse_recovery,
)
from proxscope.metrics import match_points
from proxscope.models.cnncs import (
    CNNCS,
    ECNNCS1,
    ECNNCS2,
    VARIANTS,
    CNNCSConfig,
    decode,
    encode_patches,
)
from proxscope.operators.lines import LineProjection
from proxscope.operators.matrix import MatrixOperator
from proxscope.prox import nonneg_soft_threshold, soft_threshold
from proxscope.sim.cells import CellSimConfig, simulate
from proxscope.solvers import fista, ista, proximal_gradient
from proxscope.tasks.cells.train import sample_patches


def test_line_projection_adjoint_and_bins():
    lines = LineProjection(20, 30, 5)
    assert lines.n_bins == math.ceil(math.sqrt(20**2 + 30**2))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 20, 30, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 5, lines.n_bins, generator=gen, dtype=torch.float64)
    lhs = (lines(x) * y).sum()
    rhs = (x * lines.adjoint(y)).sum()
    assert abs(float(lhs - rhs)) < 1e-9 * abs(float(lhs))
    # every pixel lands in exactly one bin per line: mass is kept on every line
    assert torch.allclose(lines(x).sum(-1), x.sum((1, 2)).unsqueeze(1).expand(3, 5))


def test_encode_points_matches_projection_of_a_point_image():
    lines = LineProjection(16, 16, 6)
    yx = torch.tensor([[2.0, 3.0], [10.0, 12.0], [15.0, 0.0]], dtype=torch.float64)
    a = lines.encode_points(yx, torch.tensor([0, 0, 1]), 2)
    image = torch.zeros(2, 16, 16, dtype=torch.float32)
    image[0, 2, 3] = image[0, 10, 12] = image[1, 15, 0] = 1
    assert torch.equal(a, lines(image))
    assert a.sum().item() == 3 * 6


def test_encode_decode_ground_truth_recovers_centroids():
    lines = LineProjection(64, 64, 8)
    points = [p for _, p in simulate(6, 64, seed=3)]
    assert sum(len(p) for p in points) >= 6
    a = encode_patches(lines, points)
    for (pred, scores), truth in zip(decode(lines, a, 0.5, 0.75, 4.0), points, strict=True):
        result = match_points(pred, truth, 2.0)
        assert result.f1 == 1.0
        assert np.all(scores >= 0.75)


def _polished_lasso(op, x, lam):
    """FISTA, then the exact lasso solution on FISTA's support and signs (closed form)."""
    a = fista(op, x, lam, nonneg_soft_threshold, n_iter=600, tol=1e-14, track=False).x
    D = op.matrix
    out = torch.zeros_like(a)
    for i in range(a.shape[0]):
        p = a[i] > 0
        Dp = D[:, p]
        out[i, p] = torch.linalg.solve(Dp.T @ Dp, Dp.T @ x[i] - lam)
    return out


def test_exact_rule_matches_finite_differences():
    gen = torch.Generator().manual_seed(1)
    m, n, lam = 12, 20, 0.05
    D = torch.randn(m, n, generator=gen, dtype=torch.float64) / math.sqrt(m)
    a_true = torch.zeros(2, n, dtype=torch.float64)
    a_true[0, [3, 11]] = torch.tensor([1.0, 0.7], dtype=torch.float64)
    a_true[1, [5, 9, 17]] = torch.tensor([0.8, 1.2, 0.9], dtype=torch.float64)
    x = (a_true @ D.T).requires_grad_(True)
    D = D.requires_grad_(True)
    a = SparseRecovery.apply(x, D, lam, _polished_lasso, "exact")
    # strict KKT: a_p > 0 with D_p^T r = lam, and D_q^T r < lam off the support, with margins,
    # so the support does not change under the finite-difference perturbations
    with torch.no_grad():
        corr = (x - a @ D.T) @ D
        p = a > 0
        assert p.any(1).all() and float(a[p].min()) > 1e-3
        assert torch.allclose(corr[p], torch.full_like(corr[p], lam), atol=1e-9)
        assert float(corr[~p].max()) < lam - 1e-3
    weight = torch.randn(2, n, generator=gen, dtype=torch.float64)
    (a * weight).sum().backward()

    def loss(xv, Dv):
        return float((_polished_lasso(MatrixOperator(Dv), xv, lam) * weight).sum())

    eps = 1e-6
    with torch.no_grad():
        for idx in [(0, 0), (0, 5), (1, 7), (1, 11)]:
            dx = torch.zeros_like(x)
            dx[idx] = eps
            fd = (loss(x + dx, D) - loss(x - dx, D)) / (2 * eps)
            assert abs(fd - float(x.grad[idx])) < 1e-6 * max(1.0, abs(fd))
        for idx in [(0, 3), (4, 9), (7, 17), (2, 0)]:
            dD = torch.zeros_like(D)
            dD[idx] = eps
            fd = (loss(x, D + dD) - loss(x, D - dD)) / (2 * eps)
            assert abs(fd - float(D.grad[idx])) < 1e-6 * max(1.0, abs(fd))
    assert torch.all(D.grad[:, 0] == 0)  # eq. (7): columns off the support get no gradient


def test_rules_agree_when_support_columns_are_orthonormal():
    q, _ = torch.linalg.qr(torch.randn(30, 10, generator=torch.Generator().manual_seed(2),
                                       dtype=torch.float64))
    x = torch.randn(4, 30, dtype=torch.float64, requires_grad=True)
    grads = []
    for rule in ("exact", "batch"):
        a = SparseRecovery.apply(x, q, 0.1, lasso_solver("fista", 200, nonneg=False), rule)
        grads.append(torch.autograd.grad((a**2).sum(), x)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-10)


def test_batch_rule_error_bound_on_gaussian_matrix():
    gen = torch.Generator().manual_seed(3)
    k = 5
    for m in (50, 200, 800):
        D = torch.randn(m, 100, generator=gen, dtype=torch.float64) / math.sqrt(m)
        a = torch.zeros(8, 100, dtype=torch.float64)
        for i in range(8):
            a[i, torch.randperm(100, generator=gen)[:k]] = 1.0
        g = torch.randn(8, 100, generator=gen, dtype=torch.float64)
        from proxscope.layers.sparse_recovery import _backward_direction

        exact = _backward_direction(D, a, g, "exact") @ D.T
        approx = _backward_direction(D, a, g, "batch") @ D.T
        for i in range(8):
            p = a[i] != 0
            s = torch.linalg.svdvals(D[:, p])
            # ||D_p (M^-1 - I) g_p|| <= max_j |1/s_j - s_j| ||g_p||
            bound = float((1 / s - s).abs().max() * g[i, p].norm())
            assert float((exact[i] - approx[i]).norm()) <= bound + 1e-12
            # Marchenko-Pastur edge: singular values within 1 ± sqrt(k/m) (+ slack)
            c = math.sqrt(k / m)
            assert float(s.min()) > 1 - 2.5 * c and float(s.max()) < 1 + 2.5 * c


def test_sparse_recovery_forward_equals_solver_and_shapes():
    model = ECNNCS2(CNNCSConfig(patch=16, n_lines=3, m=10, n_iter=30))
    codes = torch.randn(2, 3, 10)
    a = sparse_recovery(codes, model.D, 0.1, lasso_solver("none", 30))
    step = 1 / float(torch.linalg.matrix_norm(model.D.detach(), 2) ** 2)
    ref = ista(MatrixOperator(model.D.detach()), codes.reshape(-1, 10), 0.1,
               nonneg_soft_threshold, n_iter=30, tol=0.0, step=step, track=False).x
    assert a.shape == (2, 3, model.n_bins)
    assert torch.allclose(a.reshape(-1, model.n_bins), ref, atol=1e-6)


@pytest.mark.parametrize("momentum", ["none", "fista"])
def test_recovery_at_init_is_the_same_solver_for_every_variant(momentum):
    # ECNNCS-1's LISTA starts as exactly the solver that CNNCS and ECNNCS-2 use (same D, lam)
    c = CNNCSConfig(patch=16, n_lines=2, m=12, n_iter=7, lam=0.05, momentum=momentum)
    codes = torch.randn(3, 2, 12)
    models = [variant(c) for variant in (CNNCS, ECNNCS1, ECNNCS2)]
    ref = proximal_gradient(MatrixOperator(models[0].D.detach()), codes.reshape(-1, 12), 0.05,
                            nonneg_soft_threshold, n_iter=7, tol=0.0, momentum=momentum,
                            step=lasso_step(models[0].D), track=False).x
    for model in models:
        assert torch.allclose(model.recover(codes).reshape(-1, model.n_bins), ref, atol=1e-6)


def test_recovery_parameters_get_their_own_learning_rate():
    for variant, n_recovery in (("cnncs", 0), ("ecnncs1", 4 + 2), ("ecnncs2", 1)):
        model = VARIANTS[variant](CNNCSConfig(patch=16, n_lines=2, m=8, n_iter=4, recovery_lr=0.1))
        groups = model.param_groups(1e-3)
        assert [g["lr"] for g in groups] == [1e-3, 1e-4][: len(groups)]
        assert sum(len(g["params"]) for g in groups[1:]) == n_recovery
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert sum(len(g["params"]) for g in groups) == len(trainable)


@pytest.mark.parametrize("variant", ["cnncs", "ecnncs1", "ecnncs2"])
def test_model_loss_gradients_per_variant(variant):
    model = VARIANTS[variant](CNNCSConfig(patch=16, n_lines=3, m=8, width=4))
    image = torch.randn(2, 1, 16, 16)
    a = model.lines.encode_points(torch.tensor([[4.0, 5.0], [9.0, 9.0]]), torch.tensor([0, 1]), 2)
    out = model(image)
    assert out.shape == (2, 3 * 8 + 1)
    model.loss(image, a).backward()
    assert (model.D.grad is not None) == (variant == "ecnncs2")
    assert model.stem[0].weight.grad.abs().sum() > 0
    if variant == "ecnncs1":
        assert model.lista.ops[0].matrix.grad is not None


def test_loss_is_zero_l2_for_exact_codes():
    model = CNNCS(CNNCSConfig(patch=16, n_lines=3, m=8, width=4))
    a = model.lines.encode_points(torch.tensor([[4.0, 5.0]]), torch.tensor([0]), 1)
    target = model.encode(a)
    assert torch.allclose(target, a @ model.D.T)
    codes, count = model.split(torch.cat([target.flatten(1), torch.tensor([[0.2]])], 1))
    assert torch.allclose(codes, target) and float(count) == pytest.approx(1.0)


def test_simulator_statistics_and_determinism():
    cfg = CellSimConfig(size=128, density=1 / 800)
    data = simulate(6, 128, seed=5, config=cfg)
    counts = np.array([len(p) for _, p in data])
    assert abs(counts.mean() - 128 * 128 / 800) < 3 * math.sqrt(128 * 128 / 800 / 6) + 2
    for image, points in data:
        assert image.shape == (128, 128) and image.dtype == np.float32
        assert np.all((points >= 4) & (points < 124))
        d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)) + np.eye(len(points)) * 1e9
        assert d.min() >= cfg.min_distance
        # targets are brighter than the image median at their centre
        centre = image[tuple(np.round(points).astype(int).T)]
        assert np.median(centre) > np.median(image)
    again = simulate(1, 128, seed=5, config=cfg)[0]
    assert np.array_equal(again[0], data[0][0]) and np.array_equal(again[1], data[0][1])


def test_training_patches_carry_their_labels():
    # a patch's labels are the line projections of its own pixels: the centroids follow the
    # random crop, turns and flips of the image
    model = CNNCS(CNNCSConfig(patch=16, n_lines=5, m=8, width=4))
    points = np.array([[3.0, 4.0], [10.0, 30.0], [25.0, 7.0], [31.0, 31.0]])
    image = np.zeros((1, 32, 40), np.float32)
    image[0, points[:, 0].astype(int), points[:, 1].astype(int)] = 1.0
    data = [{"name": "a", "image": image, "points": points}]
    patches, a = sample_patches(model, data, np.random.default_rng(0), 12)
    assert patches.shape == (12, 1, 16, 16) and a.shape == (12, 5, model.n_bins)
    assert torch.equal(a, model.lines(patches[:, 0]))
    assert a[:, 0].sum() > 0  # some patches hold cells


def test_soft_threshold_lasso_solution_support_property():
    # forward: ISTA with the plain soft threshold also accepted by SparseRecovery
    D = torch.eye(5, dtype=torch.float64)
    x = torch.tensor([[0.5, -0.05, 2.0, 0.0, -1.0]], dtype=torch.float64)
    a = SparseRecovery.apply(x, D, 0.1, lasso_solver("none", 5, nonneg=False), "exact")
    assert torch.allclose(a, soft_threshold(x, 0.1))


def test_compressed_codes_of_ground_truth_decode_to_centroids():
    # x = D a (no network) -> lasso recovery (CNNCS path) -> back-projection -> mean shift
    model = CNNCS(CNNCSConfig(n_iter=300))
    points = [p for _, p in simulate(4, 64, seed=8)]
    a = encode_patches(model.lines, points)
    a_hat = model.recover(model.encode(a))
    c = model.config
    for (pred, _), truth in zip(decode(model.lines, a_hat, c.code_threshold, 0.75, c.bandwidth),
                                points, strict=True):
        assert match_points(pred, truth, 2.0).f1 == 1.0


@pytest.mark.parametrize("variant", ["cnncs", "ecnncs1", "ecnncs2"])
def test_older_checkpoints_name_their_variant_in_the_config(variant, tmp_path):
    # before the variants were classes, every checkpoint was a CNNCS with config["variant"] and
    # a copy of the tuned vote threshold in the config; both still load
    from safetensors.torch import save_file

    from proxscope.checkpoint import detection_settings, read_checkpoint, save_checkpoint
    from proxscope.models import load

    config = CNNCSConfig(patch=16, n_lines=3, m=8, width=4, n_iter=3)
    model = VARIANTS[variant](config)
    path = save_checkpoint(tmp_path / "new.safetensors", model, extra={"detection": {"vote_threshold": 0.3}})
    ckpt = read_checkpoint(path)
    assert "variant" not in ckpt.config and ckpt.model_class.endswith(type(model).__name__)
    old = tmp_path / "old.safetensors"
    assert "D0" in ckpt.tensors  # older checkpoints have D only (encoding = recovery matrix)
    tensors = {k: v for k, v in ckpt.tensors.items() if k != "D0"}
    save_file(tensors, str(old), metadata={
        "format": "proxscope", "format_version": "1", "model_class": "proxscope.models.cnncs:CNNCS",
        "config": json.dumps(dataclasses.asdict(config) | {"variant": variant, "vote_threshold": 0.3}),
        "extra": json.dumps({"vote_threshold": 0.3}),
    })
    for p in (path, old):
        loaded, extra = load(p, expected=CNNCS)
        assert type(loaded) is VARIANTS[variant]
        assert detection_settings(extra)["vote_threshold"] == 0.3
        codes = torch.randn(2, 3, 8)
        assert torch.equal(loaded.recover(codes), model.eval().recover(codes))


def test_bundled_model_loads_as_ecnncs2_with_its_tuned_vote_threshold():
    from proxscope.checkpoint import DIAMETER_KEY
    from proxscope.tasks.cells.detect import load_detector

    model, vote_threshold, extra = load_detector("cnncs", "cpu")
    assert type(model) is ECNNCS2 and model.D.requires_grad
    assert vote_threshold in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8) and extra["steps"] == 1200
    assert model.config.m == 112 and extra[DIAMETER_KEY] == model.config.diameter == 10.8
    assert "simulated" in extra["trained_on"]
    # D learned with its column norms held at D0's
    assert torch.allclose(model.D.norm(dim=0), model.D0.norm(dim=0), rtol=1e-5)


# Issue 17: the model's gradient w.r.t. D, column norms, rank-deficient supports, object scale --


def _direct_density(model: CNNCS) -> CNNCS:
    """The model with its CNN replaced by the identity: the 'image' is the density map δ̂, so
    tests control the codes x̂ = D0 P δ̂ the recovery sees."""
    model.density_map = lambda image: image[:, 0]
    return model


def _cells_and_map(lines: LineProjection, n_patches: int, cells: int, gen, noise: float = 0.05):
    """Random cells per patch -> (labels a (B, L, n) float64, density map (B, 1, P, P): the
    cells' pixels + positive noise, an imperfect CNN output)."""
    size = lines.height
    points = [torch.randint(2, size - 2, (cells, 2), generator=gen).double() for _ in range(n_patches)]
    a = encode_patches(lines, [p.numpy() for p in points]).double()
    density = noise * torch.rand(n_patches, 1, size, size, generator=gen, dtype=torch.float64)
    for b, p in enumerate(points):
        density[b, 0, p[:, 0].long(), p[:, 1].long()] += 0.8
    return a, density


def test_model_loss_gradient_wrt_D_matches_finite_differences():
    # float64, the exact rule on a converged lasso (m > n: strictly convex): autograd's dLoss/dD
    # of the full model loss (L2 + alpha·L1) is the derivative of that loss
    torch.manual_seed(0)
    config = CNNCSConfig(patch=16, n_lines=2, m=30, lam=0.05, rule="exact", n_iter=3000)
    model = _direct_density(ECNNCS2(config).double())
    gen = torch.Generator().manual_seed(4)
    a, image = _cells_and_map(model.lines, 2, 3, gen)
    loss = model.loss(image, a)
    (grad,) = torch.autograd.grad(loss, model.D)
    cell_column = int(a[0, 0].nonzero()[0])
    eps = 1e-6
    with torch.no_grad():
        a_hat = model.recover(model.split(model(image))[0])
        assert (a_hat[0, 0, cell_column] > 0) and not torch.equal(a_hat, torch.zeros_like(a_hat))
        for idx in [(0, cell_column), (5, cell_column), (3, int(a[1, 1].nonzero()[0])), (7, 0)]:
            D = model.D.clone()
            model.D.data[idx] = D[idx] + eps
            plus = float(model.loss(image, a))
            model.D.data[idx] = D[idx] - eps
            minus = float(model.loss(image, a))
            model.D.data.copy_(D)
            fd = (plus - minus) / (2 * eps)
            assert abs(fd - float(grad[idx])) < 1e-6 * max(1.0, abs(fd)), (idx, fd, float(grad[idx]))
    # the CNN's code and the L2 term do not depend on D
    image.requires_grad_(True)
    (l2_grad,) = torch.autograd.grad(model.code_loss(model(image), a), model.D, allow_unused=True)
    assert l2_grad is None


def test_learning_D_holds_column_norms_and_does_not_raise_held_out_l1():
    # CNN frozen (here: fixed imperfect density maps), 800 D steps at the default learning rate
    # (recovery_lr · 2e-3, Adam), renormalised after every step as `cells train` does
    torch.manual_seed(0)
    model = _direct_density(ECNNCS2(CNNCSConfig(patch=24, n_lines=4, n_iter=10)))
    gen = torch.Generator().manual_seed(5)
    a_train, x_train = (t.float() for t in _cells_and_map(model.lines, 8, 3, gen))
    a_test, x_test = (t.float() for t in _cells_and_map(model.lines, 8, 3, gen))
    norms = model.D0.norm(dim=0).clone()
    optimizer = torch.optim.Adam(model.param_groups(2e-3))
    optimizer.register_step_post_hook(lambda *_: model.renormalise())

    @torch.no_grad()
    def l1(x, a):
        return float((model.recover(model.split(model(x))[0]) - a).abs().sum())

    start = l1(x_test, a_test)
    for _ in range(800):
        optimizer.zero_grad()
        model.loss(x_train, a_train).backward()
        optimizer.step()
    assert float((model.D.detach() - model.D0).norm()) > 1e-3  # D did move
    assert float((model.D.detach().norm(dim=0) - norms).abs().max()) < 1e-6
    end = l1(x_test, a_test)
    assert end <= start


def test_exact_rule_on_supports_larger_than_m_is_least_squares():
    # 3 ISTA iterations leave supports larger than m: D(:, p) is rank-deficient, the Gram
    # system singular; the rule falls back to the minimum-norm least-squares direction
    gen = torch.Generator().manual_seed(6)
    m, n = 10, 40
    D = (torch.randn(m, n, generator=gen, dtype=torch.float64) / math.sqrt(m)).requires_grad_(True)
    x = torch.randn(3, m, generator=gen, dtype=torch.float64, requires_grad=True)
    a = SparseRecovery.apply(x, D, 0.01, lasso_solver("none", 3), "exact")
    support = a.detach() != 0
    assert (support.sum(1) > m).all()
    weight = torch.randn(3, n, generator=gen, dtype=torch.float64)
    gx, gD = torch.autograd.grad((a * weight).sum(), (x, D))
    assert gx.isfinite().all() and gD.isfinite().all()
    for i in range(3):
        p = support[i]
        Dp = D.detach()[:, p]
        v = torch.linalg.pinv(Dp.T @ Dp, hermitian=True, rtol=1e-8) @ weight[i, p]
        assert torch.allclose(gx[i], Dp @ v, atol=1e-8)


def test_simulated_scale_multiplies_lengths():
    from proxscope.sim.cells import CellSimConfig
    from proxscope.tasks.cells.train import estimate_diameter

    base = simulate(1, 128, seed=2)[0]
    assert np.array_equal(base[0], simulate(1, 128, 2, CellSimConfig(scale=1.0))[0][0])
    estimates = []
    for radius in (3.0, 12.0):
        k = radius / 4.75
        data = [{"raw": im, "points": pts} for im, pts in simulate(2, round(128 * k), 2,
                                                                     CellSimConfig(scale=k))]
        estimates.append(estimate_diameter(data))
    # the estimate grows with the objects: about 2.25·r (2r, aspect up to 1.35, soft edge)
    assert estimates[0] == pytest.approx(2.25 * 3, rel=0.2)
    assert estimates[1] == pytest.approx(2.25 * 12, rel=0.2)
