"""TV-regularized activations: the regularized softmax and ReLU of Jia, Liu & Tai.

Shapes: activations ``o`` and outputs ``A`` are (B, C, H, W) (C classes / channels); dual
variables ``xi``, ``eta`` are (B, C, 2, H, W) (one 2-vector per pixel and class).

The discrete gradient uses forward differences with a zero difference across the last row /
column (Neumann boundary); the divergence is minus its adjoint, so <grad u, p> = -<u, div p>
exactly and the discrete TV(u) = sum |grad u|_2 has the dual form of seed eq. (2.8)-(2.10).

Both layers run the primal-dual iteration from xi^0 = 0 with A^0 = activation(o); gradients flow
by autograd through the iterations (the unrolled form of the backward rules 3.16-3.19 / 3.22).
Convergence: the dual function's gradient is Lipschitz with constant lam^2·||grad||^2·L_act
(||grad||^2 <= 8; L_act = 1/2 for softmax, 1 for ReLU), so the dual step tau is capped at
1/(8·L_act·lam^2), half the largest stable step, whatever lam has been learned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..prox import project_l2_ball

GRAD_NORM_SQ = 8.0  # ||grad||^2 <= 8 for 2-D forward differences


def gradient(u: torch.Tensor) -> torch.Tensor:
    """Forward differences (B, C, H, W) -> (B, C, 2, H, W): [u(i+1,j)-u(i,j), u(i,j+1)-u(i,j)],
    zero across the last row / column. Seed eq. (4.2)."""
    dy = F.pad(torch.diff(u, dim=-2), (0, 0, 0, 1))
    dx = F.pad(torch.diff(u, dim=-1), (0, 1))
    return torch.stack([dy, dx], dim=-3)


def divergence(p: torch.Tensor) -> torch.Tensor:
    """Discrete divergence (B, C, 2, H, W) -> (B, C, H, W), div = -gradient^T (backward
    differences, Chambolle's convention). Seed eq. (2.8)."""
    py, px = p.unbind(dim=-3)
    div_y = torch.diff(F.pad(py[..., :-1, :], (0, 0, 1, 1)), dim=-2)
    div_x = torch.diff(F.pad(px[..., :, :-1], (1, 1)), dim=-1)
    return div_y + div_x


def gradient_magnitude(u: torch.Tensor) -> torch.Tensor:
    """|grad u|_2 per pixel and channel: (B, C, H, W) -> (B, C, H, W)."""
    g = gradient(u)
    return (g * g).sum(dim=-3).sqrt()


def total_variation(u: torch.Tensor) -> torch.Tensor:
    """Isotropic TV summed over channels, per sample: (B, C, H, W) -> (B,). Seed eq. (2.9)."""
    return gradient_magnitude(u).flatten(1).sum(1)


def _primal_dual(o, lam, n_iter, tau, activation, lipschitz_act):
    """Seed eqs. (3.8) / (3.14): xi <- xi - tau·lam·grad A; eta = P_B(xi); A = act(o - lam·div eta).

    ``lam``: float or tensor broadcastable to (B, C, H, W). Returns (A, eta).
    """
    lam = torch.as_tensor(lam, dtype=o.dtype, device=o.device)
    cap = 1.0 / (GRAD_NORM_SQ * lipschitz_act * lam.detach().max().clamp_min(1e-12) ** 2)
    tau = torch.minimum(torch.as_tensor(tau, dtype=o.dtype, device=o.device), cap)
    lam_dual = lam.unsqueeze(-3) if lam.dim() > 0 else lam
    a = activation(o)
    xi = o.new_zeros((*o.shape[:-2], 2, *o.shape[-2:]))
    eta = xi
    for _ in range(n_iter):
        xi = xi - tau * lam_dual * gradient(a)
        eta = project_l2_ball(xi, dim=-3)
        a = activation(o - lam * divergence(eta))
    return a, eta


def tv_softmax(o: torch.Tensor, lam, n_iter: int = 100, tau: float = 0.25) -> torch.Tensor:
    """Regularized softmax over dim 1: the solution of seed eq. (3.4),
    min_A -<A, o> + <A, log A> + lam·TV(A) s.t. sum_c A_c = 1, by ``n_iter`` steps of seed
    eq. (3.8); the output has the form of seed eq. (3.10), softmax(o - lam·div eta).
    n_iter = 0 gives the plain softmax (3.2)."""
    return _primal_dual(o, lam, n_iter, tau, lambda z: torch.softmax(z, dim=1), 0.5)[0]


def tv_relu(o: torch.Tensor, lam, n_iter: int = 100, tau: float = 0.125) -> torch.Tensor:
    """Regularized ReLU: the solution of seed eq. (3.12), the non-negative ROF model
    min_{A>=0} 0.5·||o - A||^2 + lam·TV(A), by ``n_iter`` steps of seed eq. (3.14); the output
    has the form of seed eq. (3.15), ReLU(o - lam·div eta)."""
    return _primal_dual(o, lam, n_iter, tau, torch.relu, 1.0)[0]


class _TVActivation(nn.Module):
    """Shared parameters of the TV activations: positive lam = exp(log_lam) (learnable, seed
    eqs. 3.23-3.24), dual step tau, iterations in training (default 1, seed Sec. 3.5) and in
    evaluation (default 100)."""

    def __init__(
        self,
        lam: float = 1.0,
        n_iter_train: int = 1,
        n_iter_eval: int = 100,
        tau: float = 0.25,
        learn_lam: bool = True,
    ):
        super().__init__()
        if lam <= 0:
            raise ValueError(f"lam must be positive, got {lam}")
        self.log_lam = nn.Parameter(torch.tensor(math.log(lam)), requires_grad=learn_lam)
        self.n_iter_train = n_iter_train
        self.n_iter_eval = n_iter_eval
        self.tau = tau

    @property
    def lam(self) -> torch.Tensor:
        return self.log_lam.exp()

    def iterations(self, n_iter: int | None) -> int:
        if n_iter is not None:
            return n_iter
        return self.n_iter_train if self.training else self.n_iter_eval

    def extra_repr(self) -> str:
        return (
            f"lam={float(self.lam.detach()):.4g}, n_iter_train={self.n_iter_train}, "
            f"n_iter_eval={self.n_iter_eval}, tau={self.tau}"
        )


class TVSoftmax(_TVActivation):
    """Drop-in replacement of ``softmax(o, dim=1)`` with TV regularization (seed eq. 3.4-3.10).

    forward(o (B, C, H, W), n_iter=None) -> probabilities (B, C, H, W) summing to 1 over C.
    """

    def forward(self, o: torch.Tensor, n_iter: int | None = None) -> torch.Tensor:
        return tv_softmax(o, self.lam, self.iterations(n_iter), self.tau)


class TVReLU(_TVActivation):
    """Drop-in replacement of ``relu(o)`` with TV regularization (seed eq. 3.12-3.15).

    forward(o (B, C, H, W), n_iter=None) -> (B, C, H, W) non-negative.
    """

    def __init__(self, lam: float = 1.0, n_iter_train: int = 1, n_iter_eval: int = 100,
                 tau: float = 0.125, learn_lam: bool = True):
        super().__init__(lam, n_iter_train, n_iter_eval, tau, learn_lam)

    def forward(self, o: torch.Tensor, n_iter: int | None = None) -> torch.Tensor:
        return tv_relu(o, self.lam, self.iterations(n_iter), self.tau)
