"""An untrained unrolled net from from_solver equals n solver iterations; gradients flow."""

import functools

import pytest
import torch

from proxscope.layers import UnrolledProximalGradient
from proxscope.models.lista import LISTA
from proxscope.operators import MatrixOperator, MultiConv2d
from proxscope.prox import nonneg_group_soft_threshold, soft_threshold
from proxscope.solvers import proximal_gradient


@pytest.mark.parametrize("momentum", ["none", "fista", "nesterov"])
def test_from_solver_equals_solver_iterations_matrix(momentum):
    gen = torch.Generator().manual_seed(0)
    op = MatrixOperator(torch.randn(20, 50, generator=gen))
    y = torch.randn(4, 20, generator=gen)
    net = UnrolledProximalGradient.from_solver(op, 0.2, 8, in_shape=(50,), momentum=momentum)
    expected = proximal_gradient(op, y, 0.2, soft_threshold, n_iter=8, tol=0, momentum=momentum).x
    assert torch.allclose(net(y), expected, atol=1e-5)


def test_from_solver_equals_apg_on_convolutional_coding():
    gen = torch.Generator().manual_seed(1)
    op = MultiConv2d(torch.rand(6, 5, 5, generator=gen))
    y = torch.rand(2, 1, 24, 24, generator=gen)
    prox = functools.partial(nonneg_group_soft_threshold, dim=1)
    net = UnrolledProximalGradient.from_solver(
        op, 0.1, 3, in_shape=(6, 24, 24), prox=prox, momentum="nesterov"
    )
    expected = proximal_gradient(op, y, 0.1, prox, n_iter=3, tol=0, momentum="nesterov").x
    assert torch.allclose(net(y), expected, atol=1e-5)


def test_layers_own_their_parameters_and_gradients_flow():
    op = MatrixOperator(torch.randn(10, 30))
    net = UnrolledProximalGradient.from_solver(op, 0.1, 3, in_shape=(30,))
    assert net.ops[0].matrix is not net.ops[1].matrix
    net(torch.randn(5, 10)).square().sum().backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not net.momentum.requires_grad


def test_zero_start_shortcut_equals_general_step_with_gradients():
    """forward() skips A·0 in layer 1 when x0 is None; it must match x0 = 0 through the
    general step, values and gradients (learned momentum included)."""
    gen = torch.Generator().manual_seed(3)
    op = MultiConv2d(torch.rand(4, 3, 3, generator=gen))
    prox = functools.partial(nonneg_group_soft_threshold, dim=1)
    net = UnrolledProximalGradient.from_solver(op, 0.05, 3, in_shape=(4, 10, 10), prox=prox,
                                               momentum="nesterov", learn_momentum=True)
    y = torch.rand(2, 1, 10, 10, generator=gen)
    grads = []
    for x0 in (None, torch.zeros(2, 4, 10, 10)):
        net.zero_grad()
        out = net(y, x0=x0)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
        if x0 is None:
            shortcut = out.detach()
    assert torch.allclose(shortcut, out.detach(), atol=1e-6)
    assert shortcut.abs().sum() > 0
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_share_op_uses_one_fixed_operator():
    gen = torch.Generator().manual_seed(4)
    op = MatrixOperator(torch.randn(12, 30, generator=gen))
    y = torch.randn(3, 12, generator=gen)
    shared = UnrolledProximalGradient.from_solver(op, 0.1, 6, in_shape=(30,), share_op=True,
                                                  momentum="fista")
    copied = UnrolledProximalGradient.from_solver(op, 0.1, 6, in_shape=(30,), momentum="fista")
    assert all(layer_op is op for layer_op in shared.ops)
    assert not op.matrix.requires_grad
    assert torch.allclose(shared(y), copied(y), atol=1e-6)


def test_partial_depth_runs_first_layers():
    op = MatrixOperator(torch.randn(10, 30))
    net = UnrolledProximalGradient.from_solver(op, 0.1, 5, in_shape=(30,))
    y = torch.randn(2, 10)
    short = UnrolledProximalGradient.from_solver(op, 0.1, 2, in_shape=(30,))
    assert torch.allclose(net(y, n_layers=2), short(y))


def test_lista_model_starts_as_ista():
    gen = torch.Generator().manual_seed(2)
    matrix = torch.randn(15, 40, generator=gen)
    y = torch.randn(3, 15, generator=gen)
    model = LISTA.from_solver(matrix, lam=0.1, n_layers=6)
    expected = proximal_gradient(MatrixOperator(matrix), y, 0.1, n_iter=6, tol=0).x
    assert torch.allclose(model(y), expected, atol=1e-5)


def test_positive_parametrisation_stores_logs_and_gives_the_same_net():
    """positive=True: step and threshold are exp of the stored parameters (never <= 0), and
    the net equals the one with the same values stored directly."""
    gen = torch.Generator().manual_seed(4)
    op = MatrixOperator(torch.randn(12, 20, generator=gen))
    y = torch.randn(3, 12, generator=gen)
    plain = UnrolledProximalGradient([op] * 3, [0.05, 0.04, 0.03], [0.2, 0.1, 0.05], [0.0, 0.3, 0.5])
    pos = UnrolledProximalGradient([op] * 3, [0.05, 0.04, 0.03], [0.2, 0.1, 0.05], [0.0, 0.3, 0.5],
                                   positive=True)
    torch.testing.assert_close(pos(y), plain(y))
    assert float(pos.threshold[1].detach()) == pytest.approx(torch.log(torch.tensor(0.1)).item())
    with torch.no_grad():
        pos.threshold.fill_(-30.0)
        pos.step.fill_(-30.0)
    assert float(pos.threshold_of(0)) > 0 and float(pos.step_of(2)) > 0
    with pytest.raises(ValueError, match="positive"):
        UnrolledProximalGradient([op], [0.1], [-0.1], positive=True)
