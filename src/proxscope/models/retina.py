"""Referable diabetic retinopathy nets whose heatmaps are the lesion detections.

Both map a preprocessed fundus image (N, 3, S, S) float32 (background-subtracted, x4, so about
zero-mean) to one regression score per image (N,), trained with the MSE against the referral
label y in {0, 1} (Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.1.3). Every layer is
an nn.Module in ``layers`` (an nn.Sequential, walked by :func:`proxscope.explain.lrp`) and the
forward pass is twice differentiable, as the sparsity penalty of eq. (6) needs.
Seed: deep-image-mining-retinopathy-heatmaps.txt Table 1, Sec. 5.1.2, Appendix A.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConfigModule


class RMSPool(nn.Module):
    """sqrt(MeanPool(x²) + eps) over size×size windows with the given stride; ``ceil_mode`` so
    a map smaller than the window (small inputs) still gives one value (the window is clipped).
    (N, C, H, W) -> (N, C, H', W'). Seed: deep-image-mining-retinopathy-heatmaps.txt eq. (A.5)."""

    def __init__(self, size: int = 3, stride: int = 2, eps: float = 1e-6):
        super().__init__()
        self.size, self.stride, self.eps = size, stride, eps

    def mean_pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.size, self.stride, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self.mean_pool(x * x) + self.eps)


class Maxout(nn.Module):
    """Maximum over consecutive groups of ``pool`` features: (N, pool·K) -> (N, K).
    Seed: deep-image-mining-retinopathy-heatmaps.txt Appendix A.5."""

    def __init__(self, pool: int = 2):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k = x.shape
        if k % self.pool:
            raise ValueError(f"maxout over groups of {self.pool} needs a multiple of it, got {k}")
        return x.view(n, k // self.pool, self.pool).amax(dim=-1)


def _out_size(size: int, kernel: int, stride: int, padding: int = 0, ceil: bool = False) -> int:
    """Output size of a conv/pool as torch computes it (ceil_mode: last window may be clipped)."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1 or (span < 0 and not ceil):
        raise ValueError(f"input_size too small: a {size} px map meets a {kernel} px window")
    return out


class _RetinaNet(ConfigModule):
    """Shared forward: input check, ``layers``, squeeze to (N,); He initialisation for the
    leaky rectifier (torch's default init shrinks the signal through NetB's 12 convs until the
    RMS pool's eps dominates and every image gets the same score)."""

    def reset_parameters(self) -> None:
        for layer in self.layers:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(layer.weight, a=self.config.leak, nonlinearity="leaky_relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ValueError(f"expected images (N, 3, {size}, {size}), got {tuple(x.shape)}")
        return self.layers(x).squeeze(-1)

    @property
    def last_conv(self) -> nn.Conv2d:
        """The last convolutional layer (the feature maps Grad-CAM weights)."""
        return [m for m in self.layers if isinstance(m, nn.Conv2d)][-1]


@dataclass
class NetBConfig:
    """input_size: S (px, square); widths: feature maps of the five conv stages (Table 1:
    32, 64, 128, 256, 512); dense: maxout units of each dense+maxout pair (Table 1: 512);
    leak: slope of the very leaky rectifier; dropout: drop probability."""

    input_size: int = 256
    widths: tuple[int, int, int, int, int] = (8, 16, 32, 48, 64)
    dense: int = 64
    leak: float = 0.33
    dropout: float = 0.5


class NetB(_RetinaNet):
    """'net B' of the o_O solution, scaled for a CPU: 4×4 convolutions (strides 2,1 | 2,1,1 |
    1,1,1 | 1,1,1 | 1, paddings alternating so map sizes go +1/−1 as in Table 1), 3×3/2 max pools
    between stages, a 3×3/2 RMS pool, dropout, two dense layers each followed by a maxout of 2
    (dropout between), and one dense output. Very leaky rectifiers after every conv. Biases are
    tied (Table 1 uses untied ones: too many parameters for a CPU net).
    forward: (N, 3, S, S) -> (N,) score. ValueError: wrong input shape (forward), S < 200 (construction).
    Seed: deep-image-mining-retinopathy-heatmaps.txt Table 1 (net B), Sec. 5.1.2-5.1.3."""

    config_class = NetBConfig

    # (stage, stride, padding) of each conv; a max pool follows every stage but the last.
    _convs = ((0, 2, 1), (0, 1, 2), (1, 2, 1), (1, 1, 2), (1, 1, 1), (2, 1, 2), (2, 1, 1),
              (2, 1, 2), (3, 1, 2), (3, 1, 1), (3, 1, 2), (4, 1, 1))

    def __init__(self, config: NetBConfig):
        super().__init__(config)
        layers, channels, size = [], 3, config.input_size
        for i, (stage, stride, padding) in enumerate(self._convs):
            width = config.widths[stage]
            layers += [nn.Conv2d(channels, width, 4, stride, padding), nn.LeakyReLU(config.leak)]
            channels, size = width, _out_size(size, 4, stride, padding)
            if i + 1 < len(self._convs) and self._convs[i + 1][0] != stage:
                layers.append(nn.MaxPool2d(3, 2))
                size = _out_size(size, 3, 2)
        size = _out_size(size, 3, 2, ceil=True)
        d = config.dense
        layers += [
            RMSPool(3, 2), nn.Flatten(), nn.Dropout(config.dropout),
            nn.Linear(channels * size * size, 2 * d), Maxout(2), nn.Dropout(config.dropout),
            nn.Linear(d, 2 * d), Maxout(2), nn.Linear(d, 1),
        ]
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()


@dataclass
class AlexNetLikeConfig:
    """input_size: S (px, square; the net sees S/2 after the 2×2 mean pool); widths: feature
    maps of the five conv layers (AlexNet: 96, 256, 384, 384, 256); dense: units of the two
    hidden dense layers (AlexNet: 4096); leak: rectifier slope; dropout: drop probability."""

    input_size: int = 256
    widths: tuple[int, int, int, int, int] = (16, 48, 64, 64, 48)
    dense: int = 128
    leak: float = 0.33
    dropout: float = 0.5


class AlexNetLike(_RetinaNet):
    """AlexNet-shaped: a 2×2/2 mean pool down-samples the input (so heatmaps, taken w.r.t. the
    full-size input, stay full size), then conv 11×11/4, max pool 3×3/2, conv 5×5, max pool,
    three 3×3 convs, max pool, two dense layers with dropout, one dense output. Very leaky
    rectifiers; no local response normalisation.
    forward: (N, 3, S, S) -> (N,) score. ValueError: wrong input shape (forward), S < 126 (construction).
    Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.1.2 (AlexNet)."""

    config_class = AlexNetLikeConfig

    def __init__(self, config: AlexNetLikeConfig):
        super().__init__(config)
        w, leak = config.widths, config.leak
        size = _out_size(config.input_size, 2, 2)
        # (in, out, kernel, stride, padding, max pool after)
        convs = ((3, w[0], 11, 4, 2, True), (w[0], w[1], 5, 1, 2, True), (w[1], w[2], 3, 1, 1, False),
                 (w[2], w[3], 3, 1, 1, False), (w[3], w[4], 3, 1, 1, True))
        layers = [nn.AvgPool2d(2, 2)]
        for c_in, c_out, k, stride, padding, pool in convs:
            layers += [nn.Conv2d(c_in, c_out, k, stride, padding), nn.LeakyReLU(leak)]
            size = _out_size(size, k, stride, padding)
            if pool:
                layers.append(nn.MaxPool2d(3, 2))
                size = _out_size(size, 3, 2)
        d = config.dense
        layers += [
            nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(w[4] * size * size, d),
            nn.LeakyReLU(leak), nn.Dropout(config.dropout), nn.Linear(d, d), nn.LeakyReLU(leak),
            nn.Linear(d, 1),
        ]
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()


def referable_probability(score: torch.Tensor) -> torch.Tensor:
    """Score (any shape) -> [0, 1]: clamp. A regression on y in {0, 1} with the MSE estimates
    E[y | image] = P(referable | image), so clamping keeps that scale (a sigmoid would send a
    score of 0 to 0.5); the order, hence ROC AUC, is unchanged inside [0, 1].
    Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.1.3."""
    return score.clamp(0.0, 1.0)
