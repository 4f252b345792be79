"""Compact segmentation nets whose last activation is a softmax or the TV-regularized softmax.

UNet (Ronneberger et al.) and SegNet (Badrinarayanan et al.), sized for CPU training; with
``activation='tv_softmax'`` they are the RUNet / RSegNet of Jia, Liu & Tai (seed Sec. 3-4):
the softmax of (2.1)'s last layer replaced by :class:`proxscope.layers.tv.TVSoftmax`.

Input (B, in_channels, H, W) of any size (padded by reflection to a multiple of 2^depth and
cropped back); ``forward`` returns class probabilities (B, n_classes, H, W), ``logits`` the
last layer's activations o. The convolutions pad with zeros, so output pixels within
``receptive_radius`` of the input's border see that padding (on a blank image the bundled nets
labelled a band along the right edge as nucleus); prediction therefore pads images by
reflection by ``margin`` px first (:func:`proxscope.tasks.seg.predict.segment`), as the
original UNet's overlap-tile strategy mirrors the image border.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.tv import TVSoftmax, tv_softmax
from .base import ConfigModule

ACTIVATIONS = ("softmax", "tv_softmax")


@dataclass
class SegConfig:
    in_channels: int = 3
    n_classes: int = 3
    base_channels: int = 8  # channels of the first level, doubled at each level
    depth: int = 3  # number of 2x poolings
    activation: str = "softmax"  # 'softmax' (UNet/SegNet) or 'tv_softmax' (RUNet/RSegNet)
    lam: float = 1.0  # initial TV weight (learned, seed eq. 3.23)
    tau: float = 0.25  # dual step of seed eq. (3.8)
    n_iter_train: int = 1  # seed Sec. 3.5
    n_iter_eval: int = 100


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SegmentationNet(ConfigModule):
    """Shared head of UNet and SegNet: padding, the last activation and test-time options."""

    config_class = SegConfig

    def __init__(self, config: SegConfig):
        super().__init__(config)
        if config.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {config.activation!r}")
        self.tv = (
            TVSoftmax(config.lam, config.n_iter_train, config.n_iter_eval, config.tau)
            if config.activation == "tv_softmax"
            else None
        )

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    #: receptive field radius per 2^depth px: an output pixel depends on inputs at most
    #: ``radius_per_scale · 2^depth - 2`` px away (measured by gradients in the tests)
    radius_per_scale: int

    @property
    def receptive_radius(self) -> int:
        """Largest distance (px) between an output pixel and an input pixel it depends on."""
        return self.radius_per_scale * 2**self.config.depth - 2

    @property
    def margin(self) -> int:
        """The receptive radius rounded up to a multiple of 2^depth (px): the reflection margin
        prediction adds around an image (so no output pixel sees the zero padding) and the tile
        overlap (so tiles give the result of one pass)."""
        m = 2**self.config.depth
        return -(-self.receptive_radius // m) * m

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """o: (B, in_channels, H, W) -> (B, n_classes, H, W)."""
        h, w = x.shape[-2:]
        m = 2**self.config.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self._features(x)[..., :h, :w]

    def activate(
        self, o: torch.Tensor, tv_iters: int | None = None, post_tv_lam: float | None = None
    ) -> torch.Tensor:
        """Probabilities from logits: TVSoftmax (RUNet/RSegNet; ``tv_iters`` overrides its
        iteration count), or softmax, or for a plain net with ``post_tv_lam`` the post-TV
        baseline of seed Sec. 4.1 (TV softmax with a fixed lam at test time only)."""
        if self.tv is not None:
            return self.tv(o, tv_iters)
        if post_tv_lam is not None:
            n_iter = self.config.n_iter_eval if tv_iters is None else tv_iters
            return tv_softmax(o, post_tv_lam, n_iter, self.config.tau)
        return torch.softmax(o, dim=1)

    def forward(
        self, x: torch.Tensor, tv_iters: int | None = None, post_tv_lam: float | None = None
    ) -> torch.Tensor:
        return self.activate(self.logits(x), tv_iters, post_tv_lam)


class UNet(SegmentationNet):
    """UNet: ``depth`` levels of two 3x3 conv-BN-ReLU, max pooling, transposed-conv upsampling
    and skip connections by concatenation; 1x1 conv to n_classes."""

    radius_per_scale = 6  # 2 convs per level down, 2 at the bottom, 2 per level up

    def __init__(self, config: SegConfig):
        super().__init__(config)
        widths = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        c_in = config.in_channels
        for width in widths[:-1]:
            self.down.append(_block(c_in, width))
            c_in = width
        self.bottom = _block(widths[-2], widths[-1])
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(config.depth)
        )
        self.merge = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in range(config.depth))
        self.head = nn.Conv2d(widths[0], config.n_classes, 1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for i in reversed(range(self.config.depth)):
            x = self.merge[i](torch.cat([self.up[i](x), skips[i]], dim=1))
        return self.head(x)


class SegNet(SegmentationNet):
    """SegNet: encoder of conv-BN-ReLU blocks with max pooling that remembers its indices; the
    decoder upsamples with those indices (max unpooling, no learned upsampling) then convolves."""

    radius_per_scale = 4

    def __init__(self, config: SegConfig):
        super().__init__(config)
        widths = [config.base_channels * 2**i for i in range(config.depth)]
        c_ins = [config.in_channels, *widths[:-1]]
        self.encoder = nn.ModuleList(_block(c, w) for c, w in zip(c_ins, widths, strict=True))
        c_outs = [widths[0], *widths[:-1]]
        self.decoder = nn.ModuleList(_block(w, c) for w, c in zip(widths, c_outs, strict=True))
        self.head = nn.Conv2d(widths[0], config.n_classes, 1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        indices = []
        for block in self.encoder:
            x, idx = F.max_pool2d(block(x), 2, return_indices=True)
            indices.append(idx)
        for i in reversed(range(self.config.depth)):
            x = self.decoder[i](F.max_unpool2d(x, indices[i], 2))
        return self.head(x)


ARCHITECTURES = {
    "unet": (UNet, "softmax"),
    "runet": (UNet, "tv_softmax"),
    "segnet": (SegNet, "softmax"),
    "rsegnet": (SegNet, "tv_softmax"),
}


def build(name: str, **config) -> SegmentationNet:
    """``build('runet', in_channels=3, n_classes=3)``: a model by its CLI name."""
    cls, activation = ARCHITECTURES[name]
    return cls(SegConfig(activation=activation, **config))
