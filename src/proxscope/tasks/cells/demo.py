"""The cells section of ``proxscope demo``: bundled ECNNCS-2 on freshly simulated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...data.io import atomic_path, write_image, write_points
from ...sim.cells import simulate, to_uint16
from .evaluate import DEFAULT_RADIUS as RADIUS

N_IMAGES, SIZE, SEED = 2, 256, 2024


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    return path


def _overlay(path: Path, image, truth, pred, f1: float) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(image, cmap="gray")
    ax.plot(truth[:, 1], truth[:, 0], "o", mfc="none", mec="yellow", ms=9, label="annotated")
    ax.plot(pred[:, 1], pred[:, 0], "x", color="red", ms=6, mew=1.5, label="detected")
    ax.set_title(f"ECNNCS-2 detections (F1 = {f1:.3f} at rho = {RADIUS:g} px)")
    ax.legend(loc="lower right", fontsize=8)
    ax.axis("off")
    out = _save(fig, path)
    plt.close(fig)
    return out


@torch.no_grad()
def _encoding_figure(path: Path, model, image: np.ndarray, truth: np.ndarray) -> Path:
    """One patch: its line codes (true vs predicted), recovered projections, vote map."""
    import matplotlib.pyplot as plt

    from .codec import encode_patches, vote_map
    from .train import prepare_image

    p = model.config.patch
    patch = prepare_image(image)[:, :p, :p]
    local = truth[(truth < p - 0.5).all(1)]
    a = encode_patches(model.lines, [local])
    codes, _ = model.split(model(torch.from_numpy(np.ascontiguousarray(patch))[None]))
    a_hat = model.recover(codes)
    votes = vote_map(model.lines, a_hat, model.config.code_threshold)[0].numpy()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    axes[0].imshow(patch[0], cmap="gray")
    axes[0].plot(local[:, 1], local[:, 0], "o", mfc="none", mec="yellow", ms=9)
    axes[0].set_title("patch + annotated centres")
    axes[1].plot(model.encode(a)[0].flatten().numpy(), lw=1, label="x = D a (truth)")
    axes[1].plot(codes[0].flatten().numpy(), lw=1, label="CNN output x̂")
    axes[1].set_title(f"codes of {model.config.n_lines} lines (m = {model.config.m} each)")
    axes[1].legend(fontsize=7)
    axes[2].imshow(a[0].numpy(), aspect="auto", cmap="Greys", interpolation="nearest")
    rows, cols = np.nonzero(a_hat[0].numpy() > model.config.code_threshold)
    axes[2].plot(cols, rows, "r.", ms=4)
    axes[2].set_title("line projections: truth (black), recovered (red)")
    axes[2].set_xlabel("bin")
    axes[2].set_ylabel("line")
    axes[3].imshow(votes, cmap="magma", vmin=0, vmax=1)
    axes[3].set_title("back-projection vote map")
    for ax in (axes[0], axes[3]):
        ax.axis("off")
    out = _save(fig, path)
    plt.close(fig)
    return out


def run_demo(out_dir: Path, quiet: bool = False) -> dict:
    """Simulate images into ``out_dir``, detect with the bundled model, score, draw figures."""
    from ...metrics import match_points
    from ...models import load
    from ...models.cnncs import CNNCS
    from .predict import detect

    model, extra = load("cnncs", expected=CNNCS)
    figures, tp, fp, fn = [], 0, 0, 0
    data = simulate(N_IMAGES, SIZE, SEED)
    for i, (image, truth) in enumerate(data):
        write_image(out_dir / "images" / f"cells_{i}.tif", to_uint16(image))
        write_points(out_dir / "points" / f"cells_{i}.csv", truth)
        pred, scores = detect(model, to_uint16(image))
        write_points(out_dir / "pred" / f"cells_{i}.csv", pred, {"score": scores})
        r = match_points(pred, truth, RADIUS)
        tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
        figures.append(_overlay(out_dir / f"detections_{i}.png", image, truth, pred, r.f1))
    figures.append(_encoding_figure(out_dir / "encoding.png", model, *data[0]))
    return {
        "title": "cells: CNNCS cell detection by compressed-sensing output encoding",
        "text": (
            "The bundled ECNNCS-2 model (residual CNN -> line codes x = D a -> FISTA recovery with "
            "the seed's batch backward rule during training -> back-projection -> mean shift) "
            f"detects target cells among lookalike clutter in {N_IMAGES} freshly simulated "
            f"{SIZE}x{SIZE} images. Yellow circles: annotated centres; red crosses: detections."
        ),
        "metrics": {
            "images": N_IMAGES,
            "annotated cells": tp + fn,
            "detections": tp + fp,
            "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1),
            "F1": 2 * tp / max(2 * tp + fp + fn, 1),
            "model": "cnncs (ECNNCS-2)",
            "validation F1 at training": extra.get("val_f1", float("nan")),
        },
        "figures": [str(f) for f in figures],
    }
