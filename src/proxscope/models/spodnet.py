"""SPoD-Net and LISTA-Net: M unrolled ISTA iterations for the SPoD objective (5).

Layer m (x^(0) = 0):  x^(m) = R(x^(m−1) − η^(m) Σ_t p_t^(m) ∗̄ (p_t^(m) ∗ x^(m−1) − y_t), θ^(m)),
output [x^(M)]_+.  R is the non-negative soft threshold (NST, eq. 7) or the leaky soft threshold
(LST, eq. 11). SPoD-Net factorises p_t^(m)[i,j,k] = g^(m)[i,j]·h^(m)[(t−k) mod c] (ab + c
parameters, :class:`~proxscope.operators.spod.SPoDConv`); LISTA-Net learns all abc² filter
weights (:class:`~proxscope.operators.spod.FullSPoDConv`). ``from_solver`` sets every layer to
the ISTA constants (p_t = a_t, η = 1/||A||², θ = λ_core·η), so the untrained net is exactly M
ISTA iterations on eq. (5). Layer-wise training: :mod:`proxscope.train.layerwise`.

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
from ..operators.spod import (
    DEFAULT_LAM,
    FullSPoDConv,
    SPoDConv,
    core_lam,
    lam_from_core,
    spod_filters,
)
from ..prox import leaky_soft_threshold, nonneg_soft_threshold
from .base import ConfigModule

PROXES = ("leaky", "nonneg")


@dataclass
class SPoDNetConfig:
    """channels: c; psf_size: (a, b); n_layers: M; prox: R of each layer, 'leaky' (LST, eq. 11)
    or 'nonneg' (NST, eq. 7); alpha: LST leak; lam: λ of eq. (5) the net was set up / trained
    for; tile: observation crop size (px) the net was trained on; ``from_solver`` uses it for
    λ·A/B, which depends on the image size through eq. (5)'s normalisation."""

    channels: int = 18
    psf_size: list[int] = field(default_factory=lambda: [32, 32])
    n_layers: int = 10
    prox: str = "leaky"
    alpha: float = 0.1
    lam: float = DEFAULT_LAM
    tile: int = 96


class SPoDNet(ConfigModule):
    """SPoD-Net: y (B, c, H, W) -> x (B, c, H+a−1, W+b−1) >= 0, M layers of factorised filters."""

    config_class = SPoDNetConfig

    def __init__(self, config: SPoDNetConfig):
        super().__init__(config)
        if config.prox not in PROXES:
            raise ValueError(f"prox must be one of {PROXES}, got {config.prox!r}")
        prox = (functools.partial(leaky_soft_threshold, alpha=config.alpha)
                if config.prox == "leaky" else nonneg_soft_threshold)
        ops = [self._layer_op(torch.zeros(config.psf_size)) for _ in range(config.n_layers)]
        for op in ops:
            op.requires_grad_(True)
        n = config.n_layers
        self.unrolled = UnrolledProximalGradient(ops, [0.0] * n, [0.0] * n, prox=prox,
                                                 output=torch.relu, per_layer=True)

    def _layer_op(self, psf: torch.Tensor):
        """A layer's filters p_t: SPoD-Net's g = φ, h = cos²(·π/c) (zero φ: untrained)."""
        return SPoDConv.from_psf(psf, self.config.channels)

    @classmethod
    def from_config(cls, config: dict) -> SPoDNet:
        """Also reads checkpoints that stored ``prox`` under its former name ``threshold``."""
        config = dict(config)
        if "threshold" in config:
            config["prox"] = config.pop("threshold")
        return super().from_config(config)

    @classmethod
    @torch.no_grad()
    def from_solver(cls, psf: torch.Tensor, **config) -> SPoDNet:
        """The net set to ISTA on eq. (5) for ``psf`` (a, b) with λ = ``lam``, for tiles of
        ``tile`` px (further keywords: :class:`SPoDNetConfig` fields; parameters in psf's dtype):
        p_t = a_t, η = 1/L with L the closed-form bound of ||A||² (:meth:`SPoDConv.lipschitz`),
        θ = λ·A/B·η in every layer."""
        model = cls(SPoDNetConfig(psf_size=list(psf.shape), **config)).to(psf.dtype)
        op = model._layer_op(psf.to(torch.float64))
        c, (a, b), tile = model.config.channels, psf.shape, model.config.tile
        x_shape = (c, tile + a - 1, tile + b - 1)
        # LISTA's full filters are the same A: its closed form comes from the factorised one.
        step = 1.0 / SPoDConv.from_psf(psf.to(torch.float64), c).lipschitz(x_shape, bound=True)
        threshold = core_lam(model.config.lam, x_shape, c, (a, b)) * step
        for m, layer_op in enumerate(model.unrolled.ops):
            for target, source in zip(layer_op.parameters(), op.parameters(), strict=True):
                target.copy_(source)
            model.unrolled.step[m].fill_(step)
            model.unrolled.threshold[m].fill_(threshold)
        return model

    def lam_for(self, obs_shape: tuple[int, int]) -> float:
        """λ of eq. (5) for an observation of ``obs_shape`` (H, W) with the same core weight
        λ·A/B as ``config.lam`` has on the training tiles: the thresholds θ = λ_core·η are
        fixed, while eq. (5)'s normalisation A/B depends on the image size."""
        c, (a, b), tile = self.config.channels, self.config.psf_size, self.config.tile
        lam_core = core_lam(self.config.lam, (c, tile + a - 1, tile + b - 1), c, (a, b))
        return lam_from_core(lam_core, (c, obs_shape[0] + a - 1, obs_shape[1] + b - 1), c, (a, b))

    def forward(self, y: torch.Tensor, n_layers: int | None = None,
                post_threshold: bool = True) -> torch.Tensor:
        """The first ``n_layers`` layers (all by default), then the post-threshold [x]_+ unless
        ``post_threshold=False`` (training: the last iterate x^(M), possibly slightly negative
        with LST)."""
        return self.unrolled(y, n_layers=n_layers, apply_output=post_threshold)

    def layer_parameters(self, m: int) -> list[nn.Parameter]:
        """Θ_m: the filters, η^(m) and θ^(m) of layer m (0-based)."""
        u = self.unrolled
        return [*u.ops[m].parameters(), u.step[m], u.threshold[m]]


class LISTANet(SPoDNet):
    """LISTA-Net: like :class:`SPoDNet` but with unstructured filters p_t (abc² per layer)."""

    def _layer_op(self, psf: torch.Tensor):
        return FullSPoDConv(spod_filters(psf, self.config.channels))


#: ``proxscope spod train --model`` names.
ARCHITECTURES = {"spodnet": SPoDNet, "lista": LISTANet}
