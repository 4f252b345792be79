"""The SPoD training recipe on layer-wise training (Algorithm 1, :mod:`proxscope.train.layerwise`).

The training set is a fixed pool of N random crops with random flips from a few prepared
observations (Sec. 5.1); the loss is the objective itself (eq. 9, unsupervised) or the squared
distance to FISTA solutions (eq. 8, supervised).

Seed: spodnet-lista-spod-microscopy.txt Algorithm 1, eqs. (8), (9), (12), Sec. 4.2, Sec. 5.1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from ...models.spodnet import SPoDNet
from ...operators.spod import NOISE_LAM_FACTOR, SPoDConv, lam_from_core, spod_objective
from ...train import LayerwiseConfig, train_layerwise
from ...utils import resolve_device
from .data import Prepared, random_crops
from .recover import solve

LOSSES = ("unsupervised", "supervised")


@dataclass
class SpodTraining(LayerwiseConfig):
    """Algorithm 1's settings plus the SPoD recipe: n_train: pool size N; crop: crop size (px,
    = the model's tile); loss: 'unsupervised' (eq. 9) or 'supervised' (eq. 8); fista_iters:
    FISTA iterations per supervised target; relaxed: the loss sees x^(M) before [x]_+ (see
    :func:`training_loss`; False: the loss of the post-thresholded output, which gave a 0.5 %
    lower test objective for the bundled model but lets LST stall like NST)."""

    n_train: int = 100
    crop: int = 96
    loss: str = "unsupervised"
    fista_iters: int = 1000
    relaxed: bool = True


def rule_lam(prepared: list[Prepared], kernel: np.ndarray, crop: int) -> tuple[float, float]:
    """(λ of eq. (5) for crop-px tiles, λ_core) of the noise rule
    (:func:`~proxscope.operators.spod.noise_lam`) with the median noise σ of the prepared
    training stacks: the λ a network is trained for when none is given."""
    channels, (a, b) = prepared[0].y.shape[0], kernel.shape
    op = SPoDConv.from_psf(torch.from_numpy(kernel), channels)
    lam_core = NOISE_LAM_FACTOR * float(np.median([p.sigma for p in prepared])) * op.column_norm()
    return lam_from_core(lam_core, (channels, crop + a - 1, crop + b - 1), channels, (a, b)), lam_core


def training_loss(net: SPoDNet, op, y: torch.Tensor, lam: float, n_layers: int,
                  target: torch.Tensor | None = None, relaxed: bool = True) -> torch.Tensor:
    """Per-sample loss (B,) of the first ``n_layers`` layers on prepared crops y (B, c, H, W):
    eq. (9), the objective L(Y, x) itself, or with a FISTA ``target`` eq. (8), ||x − x*||².

    The loss sees the last iterate x^(m) *before* the post-threshold [x]_+: with LST it may be
    slightly negative and eq. (9) is then taken without the constraint (plain ||x||_1, the bound
    of Theorem 1, eq. 12), so LST's non-vanishing gradients (Sec. 4.2) reach the loss even where
    [x]_+ would cut them. With NST x^(m) >= 0 and this is eq. (9) exactly. ``relaxed=False``:
    the loss of the post-thresholded output [x^(m)]_+ instead.

    Seed: spodnet-lista-spod-microscopy.txt eqs. (8), (9), (12), Sec. 4.2.
    """
    x = net(y, n_layers=n_layers, post_threshold=not relaxed)
    if target is not None:
        return (x - target).flatten(1).pow(2).sum(1)
    return spod_objective(op, x, y, lam, relaxed=relaxed)


def train_spod(
    model: SPoDNet,
    psf: np.ndarray,
    stacks: list[np.ndarray],
    cfg: SpodTraining,
    out: str | Path,
    resume: bool = False,
    on_stage: Callable[[int, str, SPoDNet], dict] | None = None,
    extra: dict | None = None,
) -> list[dict]:
    """Algorithm 1 on prepared (preprocessed, normalised) stacks (c, H, W) with the PSF (a, b);
    saves ``out``; returns the stage records of :func:`~proxscope.train.train_layerwise`."""
    if cfg.loss not in LOSSES:
        raise UserError(f"unknown loss '{cfg.loss}' (use one of {', '.join(LOSSES)})")
    op = SPoDConv.from_psf(torch.from_numpy(psf).to(torch.get_default_dtype()), model.config.channels)
    lam = model.config.lam
    pool = torch.from_numpy(random_crops(stacks, cfg.n_train, cfg.crop,
                                         np.random.default_rng([cfg.seed, 7])))
    data = (pool,)
    if cfg.loss == "supervised":
        data = (pool, solve(op, pool, lam, "fista", n_iter=cfg.fista_iters, track=False).x)
    op = op.to(resolve_device(cfg.device))

    def loss_fn(net, batch, m):
        return training_loss(net, op, batch[0], lam, m, *batch[1:], relaxed=cfg.relaxed).mean()

    return train_layerwise(model, loss_fn, data, cfg, out, resume=resume, on_stage=on_stage,
                           extra=extra)
