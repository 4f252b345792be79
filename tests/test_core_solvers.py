"""Solvers against scikit-learn's Lasso, monotonicity of ISTA, FISTA's speed-up, line search, APG."""

import functools
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

from proxscope.operators import MatrixOperator, MultiConv2d
from proxscope.prox import nonneg_group_soft_threshold, nonneg_soft_threshold
from proxscope.solvers import apg, fista, ista, lasso_objective

D64 = torch.float64


def _problem(m=40, n=60, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    matrix = torch.randn(m, n, generator=gen, dtype=D64) / m**0.5
    x_true = torch.zeros(batch, n, dtype=D64)
    x_true[:, :6] = torch.randn(batch, 6, generator=gen, dtype=D64) * 2
    y = x_true @ matrix.T + 0.05 * torch.randn(batch, m, generator=gen, dtype=D64)
    return MatrixOperator(matrix), y


def _sklearn_lasso(op, y, lam, positive=False):
    """Our objective 0.5||Ax - y||^2 + lam||x||_1 is sklearn's times m, with alpha = lam / m."""
    matrix = op.matrix.numpy()
    m = matrix.shape[0]
    out = []
    for row in y.numpy():
        model = Lasso(alpha=lam / m, fit_intercept=False, tol=1e-12, max_iter=100_000, positive=positive)
        out.append(model.fit(matrix, row).coef_)
    return torch.tensor(np.array(out))


@pytest.mark.parametrize("solver", [ista, fista, apg])
def test_lasso_matches_sklearn(solver):
    op, y = _problem()
    expected = _sklearn_lasso(op, y, lam=0.1)
    result = solver(op, y, 0.1, n_iter=20_000, tol=1e-12)
    assert torch.allclose(result.x, expected, atol=1e-4)


def test_fista_line_search_matches_sklearn():
    op, y = _problem(seed=1)
    expected = _sklearn_lasso(op, y, lam=0.1)
    result = fista(op, y, 0.1, n_iter=20_000, tol=1e-12, line_search=True)
    assert torch.allclose(result.x, expected, atol=1e-4)
    assert result.step.shape == (3,)
    # the step found never exceeds 2/L (backtracking only overshoots 1/L by the factor eta)
    assert float(result.step.min()) > 0 and float(result.step.max()) <= 2 / op.lipschitz((60,))


def test_nonneg_lasso_matches_sklearn_positive():
    op, y = _problem(seed=2)
    expected = _sklearn_lasso(op, y, lam=0.05, positive=True)
    result = fista(op, y, 0.05, nonneg_soft_threshold, n_iter=20_000, tol=1e-12)
    assert torch.allclose(result.x, expected, atol=1e-4)


def test_ista_objective_never_increases():
    op, y = _problem(seed=3)
    result = ista(op, y, 0.1, n_iter=500, tol=0)
    diffs = result.objective[1:] - result.objective[:-1]
    assert diffs.max() <= 1e-12
    assert len(result.time) == 500 and result.time == sorted(result.time)


def test_fista_needs_fewer_iterations_than_ista():
    op, y = _problem(seed=4)
    x_star = fista(op, y, 0.1, n_iter=5000, tol=1e-14).x
    f_star = lasso_objective(op, x_star, y, 0.1, lambda x: x.abs().sum(1))

    def iterations_to(result, gap=1e-8):
        ok = ((result.objective - f_star) <= gap).all(dim=1)
        return int(ok.nonzero()[0]) + 1

    n_ista = iterations_to(ista(op, y, 0.1, n_iter=3000, tol=0))
    n_fista = iterations_to(fista(op, y, 0.1, n_iter=3000, tol=0))
    assert n_fista < n_ista


def test_per_sample_lambda_equals_separate_solves():
    op, y = _problem(seed=5)
    lam = torch.tensor([0.05, 0.1, 0.3], dtype=D64)
    joint = fista(op, y, lam, n_iter=3000, tol=1e-13).x
    for i in range(3):
        alone = fista(op, y[i : i + 1], float(lam[i]), n_iter=3000, tol=1e-13).x
        assert torch.allclose(joint[i : i + 1], alone, atol=1e-8)


def test_tolerance_stops_early():
    op, y = _problem(seed=6)
    result = fista(op, y, 0.1, n_iter=10_000, tol=1e-6)
    assert result.converged and result.n_iter < 10_000
    assert result.objective.shape == (result.n_iter, 3)


def test_apg_group_sparse_convolutional_coding_optimality():
    """APG on SpotNet's problem (eq. 2): the fixed point satisfies x = prox(x - step*grad, lam*step)."""
    gen = torch.Generator().manual_seed(7)
    kernels = torch.rand(4, 5, 5, generator=gen, dtype=D64)
    op = MultiConv2d(kernels)
    x_true = torch.zeros(2, 4, 16, 16, dtype=D64)
    x_true[:, :, 4, 5] = torch.rand(2, 4, generator=gen, dtype=D64)
    x_true[:, :, 11, 9] = torch.rand(2, 4, generator=gen, dtype=D64)
    y = op(x_true)
    prox = functools.partial(nonneg_group_soft_threshold, dim=1)
    result = apg(op, y, 0.05, prox, n_iter=5000, tol=1e-12)
    x = result.x
    step = 1 / op.lipschitz((4, 16, 16))
    fixed_point = prox(x - step * op.adjoint(op(x) - y), 0.05 * step)
    assert (x >= 0).all()
    assert torch.allclose(x, fixed_point, atol=1e-9)
    # the two sources are found where they are
    energy = x.norm(dim=1)[0]
    assert set(map(tuple, (energy > 0.1 * energy.max()).nonzero().tolist())) <= {(4, 5), (11, 9)}


def test_fista_line_search_float32_runs_long_without_drift():
    """Past convergence in float32 the backtracking test compares two equal numbers up to
    rounding: the step must not collapse (it did, to ~1e-14, and FISTA's momentum then drifted
    the objective upwards) and the objective must stay at its minimum."""
    op64, y64 = _problem(m=200, n=400, seed=3)
    op, y = MatrixOperator(op64.matrix.float()), (100 * y64).float()
    result = fista(op, y, 0.5, n_iter=5000, tol=0.0, line_search=True)
    assert float(result.step.min()) > 0.25 / op.lipschitz((400,))
    final, best = result.objective[-1], result.objective.min(0).values
    assert torch.all(final <= best * (1 + 1e-5))


def test_momentum_schedule_is_the_rule_of_solvers_and_unrolled_layers():
    """One rule for both (FISTA's t-sequence, APG's (k-1)/(k+2)), on hand-computed values."""
    from proxscope.layers import unrolled
    from proxscope.solvers.proximal_gradient import momentum_schedule

    assert unrolled.momentum_schedule is momentum_schedule
    assert momentum_schedule("none", 3) == [0.0, 0.0, 0.0]
    assert momentum_schedule("nesterov", 4) == pytest.approx([0.0, 0.25, 0.4, 0.5])
    t1 = (1 + 5**0.5) / 2
    t2 = (1 + (1 + 4 * t1**2) ** 0.5) / 2
    assert momentum_schedule("fista", 2) == pytest.approx([0.0, (t1 - 1) / t2])
    with pytest.raises(ValueError, match="momentum must be"):
        momentum_schedule("heavy-ball", 2)


def test_batched_line_search_stops_each_sample_at_its_own_tolerance():
    """Issue 18.7: a batch gives each sample the iterations and the result it gets alone."""
    op, y = _problem(seed=8)
    y = y * torch.tensor([[0.3], [1.0], [4.0]], dtype=D64)
    joint = fista(op, y, 0.05, n_iter=5000, tol=1e-7, line_search=True)
    alone = [fista(op, y[i:i + 1], 0.05, n_iter=5000, tol=1e-7, line_search=True)
             for i in range(3)]
    assert joint.sample_iters.tolist() == [r.n_iter for r in alone]
    assert joint.n_iter == max(r.n_iter for r in alone) and joint.converged
    for i, r in enumerate(alone):
        assert torch.allclose(joint.x[i:i + 1], r.x, atol=1e-12, rtol=0)
        assert torch.allclose(joint.step[i:i + 1], r.step)


def test_step_above_one_over_l_warns_and_float_types_must_match():
    op, y = _problem(seed=9)
    limit = 1 / op.lipschitz((60,))
    with pytest.warns(RuntimeWarning, match="above 1/L"):
        fista(op, y, 0.1, n_iter=3, step=2.5 * limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fista(op, y, 0.1, n_iter=3, step=limit)
    op32 = MatrixOperator(op.matrix.float())
    with pytest.raises(TypeError, match="y is torch.float64 but the operator's weights are "
                                        "torch.float32"):
        fista(op32, y, 0.1, n_iter=3)
    assert fista(op32, y.float(), 0.1, n_iter=3).x.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, D64])
def test_lipschitz_converges_on_a_nearly_flat_spectrum(dtype):
    """Issue 18.4: σ = 1, 0.995, 0.995, ... (n = 400): a power iteration creeps up from 0.990;
    Lanczos gets 1.0. The cache is keyed on the accuracy arguments; repeated calls agree."""
    n = 400
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(n, n)))
    v, _ = np.linalg.qr(rng.normal(size=(n, n)))
    sigma = np.full(n, 0.995)
    sigma[0] = 1.0
    op = MatrixOperator(torch.tensor((u * sigma) @ v.T, dtype=dtype))
    assert op.lipschitz((n,)) == pytest.approx(1.0, abs=1e-5)
    rough = op.lipschitz((n,), n_iter=1)
    assert rough < 0.999  # one product: a Rayleigh quotient, cached apart from the default
    assert op.lipschitz((n,)) == pytest.approx(1.0, abs=1e-5)
    assert MatrixOperator(op.matrix.clone()).lipschitz((n,)) == op.lipschitz((n,))
