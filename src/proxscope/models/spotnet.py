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
from ..prox import nonneg_group_soft_threshold
from .base import ConfigModule


@dataclass
class SpotNetConfig:
    """n_channels: K time windows; kernel_size: h_k^(l) are kernel_size² (odd); n_layers: L."""

    n_channels: int = 30
    kernel_size: int = 5
    n_layers: int = 3


def crop_kernels(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """Central size×size crop of (K, kh, kw) kernels (odd sizes)."""
    kh, kw = kernels.shape[-2:]
    if size > min(kh, kw):
        raise ValueError(f"cannot crop {kh}x{kw} kernels to {size}x{size}")
    top, left = (kh - size) // 2, (kw - size) // 2
    return kernels[:, top : top + size, left : left + size]


class SpotNet(ConfigModule):
    """L unrolled APG layers for eq. (2) with their own 5×5 kernels h_k^(l), momentum alpha^(l)
    and threshold lambda^(l) (all trained), the non-negative group soft threshold over the K axis
    as prox, and tied matched filters h̃_k^(l) (the operator's adjoint):

        x^(l) = prox_{lambda^(l)}(z^(l−1) − h̃^(l) ⊛ (Σ_q h_q^(l) ⊛ z_q^(l−1) − s))
        z^(l) = x^(l) + alpha^(l) (x^(l) − x^(l−1))

    The gradient step size is folded into the kernels (frozen at its initial value).
    forward: s (B, 1, H, W) -> x (B, K, H, W) >= 0.
    Seed: spotnet-fluorospot-learned-iterations.txt eq. (2), Fig. 2, Sec. 2.
    """

    config_class = SpotNetConfig

    def __init__(self, config: SpotNetConfig, net: UnrolledProximalGradient | None = None):
        super().__init__(config)
        if net is None:
            zeros = torch.zeros(config.n_channels, config.kernel_size, config.kernel_size)
            n = config.n_layers
            net = UnrolledProximalGradient(
                [MultiConv2d(zeros) for _ in range(n)], [1.0] * n, [0.0] * n, [0.0] * n,
                prox=nonneg_group_soft_threshold,
            )
        for op in net.ops:
            op.kernels.requires_grad_(True)
        net.step.requires_grad_(False)
        net.momentum.requires_grad_(True)
        self.net = net

    @classmethod
    def from_solver(
        cls, kernels: torch.Tensor, lam: float, in_shape: tuple[int, int], config=None
    ) -> SpotNet:
        """Exactly ``n_layers`` APG iterations (Nesterov momentum, step 1/||A||²) for eq. (2)
        with the operator A x = Σ_k h_k ⊛ x_k of the central crops h_k of the true ``kernels``
        (K, kh, kw) and regularisation ``lam``; ``in_shape`` = (H, W) sets the step."""
        config = config or SpotNetConfig(n_channels=kernels.shape[0])
        op = MultiConv2d(crop_kernels(kernels.float(), config.kernel_size))
        net = UnrolledProximalGradient.from_solver(
            op, lam, config.n_layers, in_shape=(config.n_channels, *in_shape),
            prox=nonneg_group_soft_threshold, momentum="nesterov",
        )
        return cls(config, net)

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
