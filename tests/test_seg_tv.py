"""TV-regularized softmax / ReLU layers (seed tv-regularized-softmax-segmentation.txt, Sec. 3)."""

import math

import pytest
import torch

from proxscope.layers.tv import (
    TVReLU,
    TVSoftmax,
    _primal_dual,
    divergence,
    gradient,
    total_variation,
    tv_relu,
    tv_softmax,
)


def _random(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_divergence_is_minus_adjoint_of_gradient():
    u = _random(2, 3, 7, 9)
    p = _random(2, 3, 2, 7, 9, seed=1)
    lhs = (gradient(u) * p).sum()
    rhs = -(u * divergence(p)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_gradient_and_tv_on_hand_made_images():
    u = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    u[..., :, 3:] = 2.0  # vertical edge of height 2 between columns 2 and 3
    g = gradient(u)
    assert torch.equal(g[0, 0, 0], torch.zeros(4, 5, dtype=torch.float64))
    assert g[0, 0, 1, :, 2].tolist() == [2.0] * 4
    assert float(total_variation(u)) == pytest.approx(8.0)
    assert float(total_variation(torch.ones(1, 2, 5, 5))) == 0.0


def _softmax_primal(a, o, lam):
    return (-(a * o) + a * a.log()).flatten(1).sum(1) + lam * total_variation(a)


def _softmax_dual(o, eta, lam):
    return -torch.logsumexp(o - lam * divergence(eta), dim=1).flatten(1).sum(1)


@pytest.mark.parametrize("lam", [0.3, 1.0])
def test_tv_softmax_converges_to_the_minimiser(lam):
    """Primal (3.4) minus dual objective of the pair returned by (3.8) goes to 0."""
    o = 2 * _random(2, 3, 8, 8)
    softmax_value = _softmax_primal(torch.softmax(o, 1), o, lam)
    gaps = []
    for n_iter in (50, 1500):
        a, eta = _primal_dual(o, lam, n_iter, 0.25, lambda z: torch.softmax(z, 1), 0.5)
        primal = _softmax_primal(a, o, lam)
        gaps.append(float((primal - _softmax_dual(o, eta, lam)).max()))
        assert torch.allclose(a.sum(1), torch.ones_like(a[:, 0]))
        assert (primal < softmax_value).all()
    assert gaps[1] >= -1e-9  # weak duality
    assert gaps[1] < 0.02 * gaps[0]
    assert gaps[1] < 0.05


def test_tv_relu_converges_to_the_nonnegative_rof_solution():
    o = _random(1, 2, 8, 8)
    lam = 0.4
    a, eta = _primal_dual(o, lam, 1500, 0.125, torch.relu, 1.0)
    primal = 0.5 * ((o - a) ** 2).flatten(1).sum(1) + lam * total_variation(a)
    a_eta = torch.relu(o - lam * divergence(eta))
    dual = (0.5 * (o - a_eta) ** 2 + lam * a_eta * divergence(eta)).flatten(1).sum(1)
    assert (a >= 0).all()
    assert 0 <= float(primal - dual) < 1e-2
    assert torch.allclose(tv_relu(o, lam, 1500), a)


def test_zero_iterations_is_plain_softmax_and_large_logits_are_stable():
    o = _random(2, 4, 6, 6)
    assert torch.allclose(tv_softmax(o, 1.0, 0), torch.softmax(o, 1))
    big = 1e4 * o.float()
    a = tv_softmax(big, 2.0, 20)
    assert torch.isfinite(a).all()
    assert torch.allclose(a.sum(1), torch.ones_like(a[:, 0]))


def test_step_is_capped_for_large_lambda():
    """With lam = 20 the literal tau = 0.25 would oscillate; the capped step still converges."""
    o = 3 * _random(1, 2, 8, 8)
    lam = 20.0
    a, eta = _primal_dual(o, lam, 1500, 0.25, lambda z: torch.softmax(z, 1), 0.5)
    gap = _softmax_primal(a, o, lam) - _softmax_dual(o, eta, lam)
    assert float(gap.max()) < 0.05 * float(_softmax_primal(torch.softmax(o, 1), o, lam).abs().max())


def test_gradcheck_through_the_iterations():
    o = _random(1, 3, 5, 6).requires_grad_(True)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda o, lam: tv_softmax(o, lam, 3), (o, lam))
    assert torch.autograd.gradcheck(lambda o, lam: tv_relu(o, lam, 3), (o, lam))


def test_module_iterations_train_eval_and_learnable_positive_lambda():
    layer = TVSoftmax(lam=0.5).double()
    o = _random(2, 3, 8, 8)
    assert float(layer.lam.detach()) == pytest.approx(0.5)
    layer.train()
    assert torch.allclose(layer(o), tv_softmax(o, 0.5, 1), atol=1e-6)
    layer.eval()
    assert torch.allclose(layer(o), tv_softmax(o, 0.5, 100), atol=1e-6)
    layer.train()
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    loss = -layer(o).gather(1, target[:, None]).log().mean()
    loss.backward()
    assert layer.log_lam.grad is not None and layer.log_lam.grad.abs() > 0
    layer.log_lam.data.fill_(math.log(1e-3))
    assert float(layer.lam.detach()) > 0
    relu = TVReLU(lam=0.2).double().eval()
    assert torch.allclose(relu(o), tv_relu(o, 0.2, 100, 0.125), atol=1e-6)
    with pytest.raises(ValueError):
        TVSoftmax(lam=0.0)
