"""SPoD-Net and LISTA-Net: M unrolled ISTA iterations for the SPoD objective (5).

Layer m (x^(0) = 0):  x^(m) = R(x^(m−1) − η^(m) Σ_t p_t^(m) ∗̄ (p_t^(m) ∗ x^(m−1) − y_t), θ^(m)),
output [x^(M)]_+.  R is the non-negative soft threshold (NST, eq. 7) or the leaky soft threshold
(LST, eq. 11). SPoD-Net factorises p_t^(m)[i,j,k] = g^(m)[i,j]·h^(m)[(t−k) mod c] (ab + c
parameters, :class:`~proxscope.operators.spod.SPoDConv`); LISTA-Net learns all abc² filter
weights (:class:`~proxscope.operators.spod.FullSPoDConv`). ``init_ista`` sets every layer to
the ISTA constants (p_t = a_t, η = 1/||A||², θ = λ_core·η), so the untrained net is exactly M
ISTA iterations on eq. (5).

η here is the core step on 0.5·||Ax − y||² + λ_core·||x||_1 (λ_core = λ·A/B, see
:func:`~proxscope.operators.spod.core_lam`): the seed's η/A.

Seed: spodnet-lista-spod-microscopy.txt Sec. 3 (LISTA-Net), eq. (10) (SPoD-Net), eq. (11)
(LST + post-threshold [x]_+), eqs. (6)-(7) (ISTA).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers.unrolled import UnrolledProximalGradient
from ..operators.spod import FullSPoDConv, SPoDConv, core_lam, spod_filters
from ..prox import leaky_soft_threshold, nonneg_soft_threshold
from .base import ConfigModule

THRESHOLDS = ("leaky", "nonneg")


@dataclass
class SPoDNetConfig:
    """channels: c; psf_size: (a, b); n_layers: M; threshold: 'leaky' (LST, eq. 11) or
    'nonneg' (NST, eq. 7); alpha: LST leak; lam: λ of eq. (5) the net was set up / trained for;
    tile: observation crop size (px) the net was trained on; ``init_ista`` uses it for λ·A/B,
    which depends on the image size through eq. (5)'s normalisation."""

    channels: int = 18
    psf_size: list[int] = field(default_factory=lambda: [32, 32])
    n_layers: int = 10
    threshold: str = "leaky"
    alpha: float = 0.1
    lam: float = 0.05
    tile: int = 96


class LayerwiseUnrolled(UnrolledProximalGradient):
    """:class:`UnrolledProximalGradient` with one scalar parameter per layer for η and θ (not one
    (M,) tensor), so layer-wise training can give each layer its own optimizer group."""

    def __init__(self, ops, prox, output):
        n = len(ops)
        super().__init__(ops, [0.0] * n, [0.0] * n, prox=prox, output=output)
        del self.step, self.threshold
        self.step = nn.ParameterList([nn.Parameter(torch.tensor(0.0)) for _ in range(n)])
        self.threshold = nn.ParameterList([nn.Parameter(torch.tensor(0.0)) for _ in range(n)])

    def layer_parameters(self, m: int) -> list[nn.Parameter]:
        """Θ_m: the operator weights, η^(m) and θ^(m) of layer m (0-based)."""
        return [*self.ops[m].parameters(), self.step[m], self.threshold[m]]


class SPoDNet(ConfigModule):
    """SPoD-Net: y (B, c, H, W) -> x (B, c, H+a−1, W+b−1) >= 0, M layers of factorised filters."""

    config_class = SPoDNetConfig

    def __init__(self, config: SPoDNetConfig):
        super().__init__(config)
        if config.threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {THRESHOLDS}, got {config.threshold!r}")
        if config.threshold == "leaky":
            prox = functools.partial(leaky_soft_threshold, alpha=config.alpha)
        else:
            prox = nonneg_soft_threshold
        ops = [self._make_op() for _ in range(config.n_layers)]
        for op in ops:
            for p in op.parameters():
                p.requires_grad_(True)
        self.unrolled = LayerwiseUnrolled(ops, prox=prox, output=torch.relu)

    def _make_op(self):
        a, b = self.config.psf_size
        return SPoDConv(torch.zeros(a, b), torch.zeros(self.config.channels))

    def _ista_op(self, psf: torch.Tensor):
        return SPoDConv.from_psf(psf, self.config.channels)

    @torch.no_grad()
    def init_ista(self, psf: torch.Tensor) -> SPoDNet:
        """Set every layer to ISTA on eq. (5) for ``psf`` (a, b) with λ = config.lam, for tiles
        of config.tile px: p_t = a_t, η = 1/||A||², θ = λ·A/B·η."""
        psf = psf.to(torch.float64)
        if list(psf.shape) != list(self.config.psf_size):
            raise ValueError(f"PSF is {tuple(psf.shape)}, the model expects {self.config.psf_size}")
        op = self._ista_op(psf)
        c, (a, b) = self.config.channels, psf.shape
        x_shape = (c, self.config.tile + a - 1, self.config.tile + b - 1)
        step = 1.0 / op.lipschitz(x_shape)
        threshold = core_lam(self.config.lam, x_shape, c, (a, b)) * step
        for m in range(self.config.n_layers):
            layer_op = self.unrolled.ops[m]
            for target, source in zip(layer_op.parameters(), op.parameters(), strict=True):
                target.copy_(source)
            self.unrolled.step[m].fill_(step)
            self.unrolled.threshold[m].fill_(threshold)
        return self

    def forward(self, y: torch.Tensor, n_layers: int | None = None,
                post_threshold: bool = True) -> torch.Tensor:
        """The first ``n_layers`` layers (all by default), then the post-threshold [x]_+ unless
        ``post_threshold=False`` (training: the last iterate x^(M), possibly slightly negative
        with LST)."""
        return self.unrolled(y, n_layers=n_layers, apply_output=post_threshold)

    def layer_parameters(self, m: int) -> list[nn.Parameter]:
        return self.unrolled.layer_parameters(m)

    @torch.no_grad()
    def shrink_layer(self, m: int, gamma: float) -> None:
        """Θ_m ← γ·Θ_m (Algorithm 1, after training layer m)."""
        for p in self.layer_parameters(m):
            p.mul_(gamma)


class LISTANet(SPoDNet):
    """LISTA-Net: like :class:`SPoDNet` but with unstructured filters p_t (abc² per layer)."""

    def _make_op(self):
        a, b = self.config.psf_size
        c = self.config.channels
        return FullSPoDConv(torch.zeros(c, c, a, b))

    def _ista_op(self, psf: torch.Tensor):
        return FullSPoDConv(spod_filters(psf, self.config.channels))
