"""The cells section of ``proxscope demo``: bundled ECNNCS-2 on freshly simulated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...data.io import write_image, write_points
from ...metrics import match_points, pool_matches
from ...models.cnncs import encode_patches, vote_map
from ...report import save_figure
from ...sim.cells import simulate, to_uint16
from ..base import DemoResult
from .detect import detect, load_detector, prepare
from .task import RADIUS

N_IMAGES, SIZE, SEED = 2, 256, 2024


def _overlay(path: Path, image, truth, pred, f1: float) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(image, cmap="gray")
    ax.plot(truth[:, 1], truth[:, 0], "o", mfc="none", mec="yellow", ms=9, label="annotated")
    ax.plot(pred[:, 1], pred[:, 0], "x", color="red", ms=6, mew=1.5, label="detected")
    ax.set_title(f"ECNNCS-2 detections (F1 = {f1:.3f} at rho = {RADIUS:g} px)")
    ax.legend(loc="lower right", fontsize=8)
    ax.axis("off")
    return save_figure(fig, path, dpi=90)


@torch.no_grad()
def _encoding_figure(path: Path, model, image: np.ndarray, truth: np.ndarray) -> Path:
    """One patch: its line codes (true vs predicted), recovered projections, vote map."""
    import matplotlib.pyplot as plt

    c = model.config
    patch = prepare(image, 0)[0][:, : c.patch, : c.patch]
    local = truth[(truth < c.patch - 0.5).all(1)]
    a = encode_patches(model.lines, [local])
    codes, _ = model.split(model(torch.from_numpy(np.ascontiguousarray(patch))[None]))
    a_hat = model.recover(codes)
    votes = vote_map(model.lines, a_hat, c.code_threshold)[0].numpy()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    axes[0].imshow(patch[0], cmap="gray")
    axes[0].plot(local[:, 1], local[:, 0], "o", mfc="none", mec="yellow", ms=9)
    axes[0].set_title("patch + annotated centres")
    axes[1].plot(model.encode(a)[0].flatten().numpy(), lw=1, label="x = D a (truth)")
    axes[1].plot(codes[0].flatten().numpy(), lw=1, label="CNN output x̂")
    axes[1].set_title(f"codes of {c.n_lines} lines (m = {c.m} each)")
    axes[1].legend(fontsize=7)
    axes[2].imshow(a[0].numpy(), aspect="auto", cmap="Greys", interpolation="nearest")
    rows, cols = np.nonzero(a_hat[0].numpy() > c.code_threshold)
    axes[2].plot(cols, rows, "r.", ms=4)
    axes[2].set_title("line projections: truth (black), recovered (red)")
    axes[2].set_xlabel("bin")
    axes[2].set_ylabel("line")
    axes[3].imshow(votes, cmap="magma", vmin=0, vmax=1)
    axes[3].set_title("back-projection vote map")
    for ax in (axes[0], axes[3]):
        ax.axis("off")
    return save_figure(fig, path, dpi=90)


def run_demo(out_dir: Path) -> DemoResult:
    """Simulate images into ``out_dir``, detect with the bundled model, score, draw figures."""
    model, vote_threshold, extra = load_detector("cnncs", device="cpu")
    figures, matches = [], []
    data = simulate(N_IMAGES, SIZE, SEED)
    for i, (image, truth) in enumerate(data):
        write_image(out_dir / "images" / f"cells_{i}.tif", to_uint16(image))
        write_points(out_dir / "points" / f"cells_{i}.csv", truth)
        pred, scores = detect(model, to_uint16(image), vote_threshold)
        write_points(out_dir / "pred" / f"cells_{i}.csv", pred, {"score": scores})
        matches.append(match_points(pred, truth, RADIUS))
        figures.append(_overlay(out_dir / f"detections_{i}.png", image, truth, pred, matches[-1].f1))
    figures.append(_encoding_figure(out_dir / "encoding.png", model, *data[0]))
    pooled = pool_matches(matches)
    return DemoResult(
        title="cells: CNNCS cell detection by compressed-sensing output encoding",
        text=(
            "The bundled ECNNCS-2 model (residual CNN -> line codes x = D a -> FISTA recovery with "
            "the seed's batch backward rule during training -> back-projection -> mean shift) "
            f"detects target cells among lookalike clutter in {N_IMAGES} freshly simulated "
            f"{SIZE}x{SIZE} images. Yellow circles: annotated centres; red crosses: detections."
        ),
        metrics={
            "images": N_IMAGES,
            "annotated cells": pooled.tp + pooled.fn,
            "detections": pooled.tp + pooled.fp,
            "precision": pooled.precision,
            "recall": pooled.recall,
            "F1": pooled.f1,
            "model": "cnncs (ECNNCS-2)",
            "validation F1 at training": extra.get("val_f1", float("nan")),
        },
        figures=figures,
    )
