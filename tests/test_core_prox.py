"""Each prox equals its definition: closed form, and brute-force minimisation on a grid."""

import functools

import pytest
import torch

from proxscope.prox import (
    leaky_soft_threshold,
    nonneg_group_soft_threshold,
    nonneg_soft_threshold,
    penalty_of,
    project_l2_ball,
    soft_threshold,
)

D64 = torch.float64
GRID = torch.linspace(-3, 3, 60001, dtype=D64)  # step 1e-4


def _brute_force_prox_1d(v: float, threshold: float, penalty) -> float:
    cost = 0.5 * (GRID - v) ** 2 + threshold * penalty(GRID)
    return GRID[cost.argmin()].item()


@pytest.mark.parametrize("v", [-2.3, -0.4, 0.0, 0.3, 0.7, 1.9])
def test_soft_threshold_is_prox_of_l1(v):
    expected = _brute_force_prox_1d(v, 0.5, lambda g: g.abs())
    assert soft_threshold(torch.tensor([v], dtype=D64), 0.5).item() == pytest.approx(expected, abs=2e-4)


@pytest.mark.parametrize("v", [-2.3, -0.4, 0.3, 0.7, 1.9])
def test_nonneg_soft_threshold_is_prox_of_nonneg_l1(v):
    penalty = lambda g: torch.where(g >= 0, g, torch.full_like(g, torch.inf))  # noqa: E731
    expected = _brute_force_prox_1d(v, 0.5, penalty)
    got = nonneg_soft_threshold(torch.tensor([v], dtype=D64), 0.5).item()
    assert got == pytest.approx(expected, abs=2e-4)


def test_leaky_soft_threshold_eq11():
    x = torch.tensor([-1.0, 0.2, 0.5, 0.9, 3.0], dtype=D64)
    got = leaky_soft_threshold(x, 0.5, alpha=0.1)
    expected = torch.tensor([-0.15, -0.03, 0.0, 0.4, 2.5], dtype=D64)
    assert torch.allclose(got, expected, atol=1e-12)
    # alpha = 0 is the non-negative soft threshold
    assert torch.equal(leaky_soft_threshold(x, 0.5, alpha=0.0), nonneg_soft_threshold(x, 0.5))


def test_nonneg_group_soft_threshold_closed_form_and_brute_force():
    x = torch.tensor([[3.0, -1.0, 4.0], [0.1, 0.2, -0.3]], dtype=D64).T.unsqueeze(0)  # (1, 3, 2)
    out = nonneg_group_soft_threshold(x, 1.0, dim=1)
    # group 0: [3, 0, 4] (norm 5) shrinks by factor 1 - 1/5; group 1: [0.1, 0.2, 0] is zeroed
    assert torch.allclose(out[0, :, 0], torch.tensor([2.4, 0.0, 3.2], dtype=D64))
    assert torch.equal(out[0, :, 1], torch.zeros(3, dtype=D64))
    # brute force on a 2-D grid for one group
    g = torch.linspace(-1, 3, 801, dtype=D64)
    a, b = torch.meshgrid(g, g, indexing="ij")
    v = torch.tensor([2.0, -0.5], dtype=D64)
    pen = torch.where((a >= 0) & (b >= 0), torch.sqrt(a**2 + b**2), torch.full_like(a, torch.inf))
    cost = 0.5 * ((a - v[0]) ** 2 + (b - v[1]) ** 2) + 0.7 * pen
    idx = cost.argmin()
    expected = torch.stack([a.flatten()[idx], b.flatten()[idx]])
    got = nonneg_group_soft_threshold(v.reshape(1, 2), 0.7, dim=1)[0]
    assert torch.allclose(got, expected, atol=6e-3)


def test_project_l2_ball():
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=D64).T.unsqueeze(0)  # groups along dim 1
    out = project_l2_ball(x, dim=1)
    assert torch.allclose(out[0, :, 0], torch.tensor([0.6, 0.8], dtype=D64))
    assert torch.allclose(out[0, :, 1], torch.tensor([0.3, 0.4], dtype=D64))


def test_tensor_threshold_broadcasts_per_sample():
    x = torch.ones(2, 3, dtype=D64)
    out = soft_threshold(x, torch.tensor([[0.25], [0.75]], dtype=D64))
    assert torch.allclose(out, torch.tensor([[0.75] * 3, [0.25] * 3], dtype=D64))


def test_prox_is_differentiable():
    x = torch.randn(5, 4, dtype=D64, requires_grad=True)
    prox = functools.partial(nonneg_group_soft_threshold, dim=1)
    assert torch.autograd.gradcheck(lambda v: prox(v + 2.0, 0.3), (x,))


def test_penalty_of_follows_partial():
    x = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]], dtype=D64)  # (1, 2, 2)
    rows = penalty_of(functools.partial(nonneg_group_soft_threshold, dim=2))(x)
    columns = penalty_of(functools.partial(nonneg_group_soft_threshold, dim=1))(x)
    assert rows.tolist() == [6.0]  # ||(3, 4)|| + ||(0, 1)||
    assert columns.tolist() == pytest.approx([3.0 + 17**0.5])
