"""SpotNet (unrolled APG for convolutional sparse coding) and the ConvNet baseline.

Both map a FluoroSpot image s (B, 1, H, W) in [0, 255] to non-negative secretion maps
x (B, K, H, W) (K = 30 time windows) and are trained with the MSE loss of
Seed: spotnet-fluorospot-learned-iterations.txt eq. (3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.unrolled import UnrolledProximalGradient
from ..operators import MultiConv2d
from ..prox import nonneg_group_soft_threshold, soft_threshold
from ..solvers.proximal_gradient import momentum_schedule
from .base import ConfigModule

SHRINKAGES = ("soft", "nonneg_group")


@dataclass
class SpotNetConfig:
    """n_channels: K time windows; kernel_size: h_k^(l) are kernel_size² (odd); n_layers: L
    (the net has the L + 1 layers l = 0..L of eq. (3)); shrinkage: 'soft' (element-wise soft
    threshold, the seed's trained non-linearity, no dead half-space) or 'nonneg_group' (the
    exact prox of eq. (2), used by APG); max_step_norm: bound rho on η_l·||H_l||² (< 2 keeps
    every gradient step non-expansive; 0 disables it)."""

    n_channels: int = 30
    kernel_size: int = 5
    n_layers: int = 3
    shrinkage: str = "soft"
    max_step_norm: float = 1.9


def crop_kernels(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """Central size×size crop of (K, kh, kw) kernels (odd sizes)."""
    kh, kw = kernels.shape[-2:]
    if size > min(kh, kw):
        raise ValueError(f"cannot crop {kh}x{kw} kernels to {size}x{size}")
    top, left = (kh - size) // 2, (kw - size) // 2
    return kernels[:, top : top + size, left : left + size]


def spectral_norm_sq(kernels: torch.Tensor, grid: int = 32) -> torch.Tensor:
    """||H||² of H x = Σ_k h_k ⊛ x_k for (K, kh, kw) kernels: max over a grid×grid set of
    frequencies of Σ_k |ĥ_k(ω)|² (the operator norm on unbounded images, sampled; within a
    few % of it for 5×5 kernels). Differentiable."""
    spectrum = torch.fft.rfft2(kernels, s=(max(grid, kernels.shape[-2]), max(grid, kernels.shape[-1])))
    return spectrum.abs().pow(2).sum(0).max()


class _BoundedSteps(UnrolledProximalGradient):
    """Unrolled APG whose step is min(η_l, rho / ||H_l||²): training may grow the kernels, but
    never past a non-expansive gradient step (the collapse of issue 16: η||H||² 1 -> 7.3)."""

    def __init__(self, *args, max_step_norm: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_step_norm = max_step_norm

    def step_of(self, m: int) -> torch.Tensor:
        step = super().step_of(m)
        if not self.max_step_norm:
            return step
        return torch.minimum(step, self.max_step_norm / spectral_norm_sq(self.ops[m].kernels))


def _shrinkage(name: str):
    if name not in SHRINKAGES:
        raise ValueError(f"unknown shrinkage {name!r} (choose from {', '.join(SHRINKAGES)})")
    return soft_threshold if name == "soft" else nonneg_group_soft_threshold


class SpotNet(ConfigModule):
    """The L + 1 unrolled APG layers l = 0..L of eq. (3), each with its own kernels h_k^(l)
    (kernel_size², trained), step η^(l) and threshold λ^(l) (both trained through exp of a free
    parameter, so > 0 and moved by relative amounts) and momentum α^(l) (trained); tied matched
    filters h̃_k^(l) (the operator's adjoint); x^(−1) = z^(−1) = 0:

        x^(l) = φ_{λ^(l)}(z^(l−1) − η^(l) h̃^(l) ⊛ (Σ_q h_q^(l) ⊛ z_q^(l−1) − s))
        z^(l) = x^(l) + α^(l) (x^(l) − x^(l−1))

    φ is the shrinkage of the config; the step used is min(η^(l), rho/||H^(l)||²).
    forward: s (B, 1, H, W) in image units -> x^(L) (B, K, H, W) in target units (with
    'soft' it may hold small negative values; :func:`proxscope.tasks.spots.predict.infer`
    clips them).
    Seed: spotnet-fluorospot-learned-iterations.txt eqs. (2)-(3), Fig. 2, Sec. 2.
    """

    config_class = SpotNetConfig

    def __init__(self, config: SpotNetConfig, net: UnrolledProximalGradient | None = None):
        super().__init__(config)
        if net is None:  # placeholder values (replaced by a state dict or an initialiser)
            kernels = torch.zeros(config.n_channels, config.kernel_size, config.kernel_size)
            net = self._build(config, kernels, step=1.0, threshold=1.0)
        self.net = net

    @staticmethod
    def _build(config: SpotNetConfig, kernels: torch.Tensor, step: float, threshold: float):
        n = config.n_layers + 1
        ops = [MultiConv2d(kernels) for _ in range(n)]
        for op in ops:
            op.kernels.requires_grad_(True)
        return _BoundedSteps(
            ops, [step] * n, [threshold] * n, momentum_schedule("nesterov", n),
            prox=_shrinkage(config.shrinkage), learn_momentum=True, positive=True,
            max_step_norm=config.max_step_norm,
        )

    @classmethod
    def from_kernels(
        cls, kernels: torch.Tensor, lam: float, in_shape: tuple[int, int], config=None
    ) -> SpotNet:
        """Exactly L + 1 APG iterations (Nesterov momentum, step 1/||A||², prox of the config's
        shrinkage, default the non-negative group threshold of eq. (2)) with the operator
        A x = Σ_k h_k ⊛ x_k of the central crops h_k of the true ``kernels`` (K, kh, kw) and
        regularisation ``lam`` > 0; ``in_shape`` = (H, W) sets the step."""
        config = config or SpotNetConfig(n_channels=kernels.shape[0], shrinkage="nonneg_group")
        cropped = crop_kernels(kernels.float(), config.kernel_size)
        step = 1.0 / MultiConv2d(cropped).lipschitz((config.n_channels, *in_shape))
        return cls(config, cls._build(config, cropped, step, lam * step))

    @classmethod
    def random(cls, images: torch.Tensor, config=None, seed: int = 0,
               quantile: float = 0.9) -> SpotNet:
        """The training start of the seed: zero-mean random kernels (one draw for all layers,
        scaled to ||H||² = 1, step 1) and every threshold at the ``quantile`` of |η h̃ ⊛ s|, the
        first layer's input, over ``images`` (B, 1, H, W), so about 1 − quantile of it passes."""
        config = config or SpotNetConfig()
        generator = torch.Generator().manual_seed(seed)
        size = (config.n_channels, config.kernel_size, config.kernel_size)
        kernels = torch.randn(size, generator=generator, dtype=torch.float64)
        kernels = (kernels - kernels.mean((1, 2), keepdim=True)).float()
        kernels = kernels / spectral_norm_sq(kernels).sqrt()
        first = MultiConv2d(kernels).adjoint(images.float()).abs().flatten()
        sample = first[torch.randperm(len(first), generator=generator)[:1_000_000]]
        threshold = max(float(torch.quantile(sample, quantile)), 1e-6)
        return cls(config, cls._build(config, kernels, 1.0, threshold))

    def param_groups(self, lr: float, scalar_lr: float) -> list[dict]:
        """Adam groups: the kernels at ``lr``; log-steps, log-thresholds and momenta at
        ``scalar_lr`` (they need relative moves of order 1 within a few hundred steps)."""
        kernels = [op.kernels for op in self.net.ops]
        scalars = [self.net.step, self.net.threshold, self.net.momentum]
        return [{"params": kernels, "lr": lr}, {"params": scalars, "lr": scalar_lr}]

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s)


@dataclass
class SpotConvNetConfig:
    """Feature maps of the two full layers, K outputs, kernel size and the number of
    per-feature (depthwise) layers after the split; input is divided by ``input_scale``."""

    n_channels: int = 30
    features: tuple[int, int] = (6, 15)
    kernel_size: int = 5
    n_depthwise: int = 3
    input_scale: float = 255.0


class SpotConvNet(ConfigModule):
    """ConvNet baseline: two full 5×5 conv layers (6, 15 maps), one grouped layer splitting each
    map in two (30 maps), then ``n_depthwise`` per-feature 5×5 layers; scalar bias per map, ReLU
    after every layer (so the output is >= 0). About 216 5×5 convolutions.
    forward: s (B, 1, H, W) -> x (B, K, H, W). Seed: spotnet-fluorospot-learned-iterations.txt
    Sec. 3-4 (ConvNet)."""

    config_class = SpotConvNetConfig

    def __init__(self, config: SpotConvNetConfig):
        super().__init__(config)
        f1, f2 = config.features
        k, pad = config.kernel_size, config.kernel_size // 2
        if config.n_channels % f2:
            raise ValueError("n_channels must be a multiple of the second layer's feature maps")
        layers = [
            nn.Conv2d(1, f1, k, padding=pad),
            nn.Conv2d(f1, f2, k, padding=pad),
            nn.Conv2d(f2, config.n_channels, k, padding=pad, groups=f2),
        ]
        layers += [
            nn.Conv2d(config.n_channels, config.n_channels, k, padding=pad, groups=config.n_channels)
            for _ in range(config.n_depthwise)
        ]
        self.layers = nn.ModuleList(layers)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        x = s / self.config.input_scale
        for layer in self.layers:
            x = F.relu(layer(x))
        return x


def secretion_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1/K) Σ_k ||x_k^(L) − x_k||², averaged over the batch and (unlike eq. (3)) divided by the
    number of pixels so values do not depend on the crop size.
    Seed: spotnet-fluorospot-learned-iterations.txt eq. (3)."""
    return (pred - target).pow(2).mean()
