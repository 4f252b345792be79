"""The retina nets, their scores and heatmaps: the pieces train, predict, evaluate and bench share.

Seed: deep-image-mining-retinopathy-heatmaps.txt eqs. (2)-(3) (heatmaps), Sec. 5.1.2 (nets).
"""

from __future__ import annotations

import numpy as np
import torch

ARCHITECTURES = ("netb", "alexnet")
#: dropout of the CPU-sized nets: 0.1 (measured: net B, 320 simulated photographs, Adam 1e-3,
#: validation AUC 0.94 after 400 steps with 0.1 against 0.80 after 800 steps with 0.5)
DROPOUT = 0.1
#: heatmap criteria: the seed's (hue-constrained sensitivity, sensitivity) and the comparators
METHODS = ("hue", "sensitivity", "lrp", "gradcam", "occlusion")


def build(arch: str, size: int):
    """A fresh net for ``size`` x ``size`` canvases: 'netb' (net B, Table 1) or 'alexnet'."""
    from ...models.retina import AlexNetLike, AlexNetLikeConfig, NetB, NetBConfig

    if arch == "netb":
        return NetB(NetBConfig(input_size=size, dropout=DROPOUT))
    if arch == "alexnet":
        return AlexNetLike(AlexNetLikeConfig(input_size=size, dropout=DROPOUT))
    raise ValueError(f"unknown architecture {arch!r} (one of {ARCHITECTURES})")


def heatmap_fn(method: str):
    """``f(model, x (N, 3, S, S)) -> (N, S, S)`` float32 for a criterion of :data:`METHODS`."""
    from ... import explain

    functions = {"hue": explain.hue_constrained_sensitivity, "sensitivity": explain.sensitivity,
                 "lrp": explain.lrp, "gradcam": explain.grad_cam, "occlusion": explain.occlusion}
    if method not in functions:
        raise ValueError(f"unknown heatmap method {method!r} (one of {', '.join(METHODS)})")
    return functions[method]


def score_and_heatmaps(model, images: np.ndarray, method: str | None = "hue", batch_size: int = 16,
                       fov: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Referable probability (N,) and heatmaps (N, S, S) (zero outside ``fov`` when given) of
    preprocessed canvases ``images`` (N, 3, S, S), in batches; ``method`` None: scores only.
    The model is put in eval mode (dropout off) and left so."""
    from ...models.retina import referable_probability

    model.eval()
    device = next(model.parameters()).device
    scores, maps = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        with torch.no_grad():
            scores.append(referable_probability(model(x)).cpu().numpy())
        if method is not None:
            maps.append(heatmap_fn(method)(model, x).detach().cpu().numpy())
    heatmaps = np.concatenate(maps) if method is not None else None
    if heatmaps is not None and fov is not None:
        heatmaps = heatmaps * fov
    return np.concatenate(scores).astype(np.float32), heatmaps


#: a heatmap maximum within this distance (px) of a lesion hits it: microaneurysms are 1-2 px
#: wide on a 256 px canvas, where a maximum one pixel off would otherwise be a miss
FROC_TOLERANCE = 2.0


def lesion_scores(heatmaps, masks) -> dict[str, float | None]:
    """FROC area (0-10 false positives per image, / 10) per lesion type and their mean
    (``mean_froc``) of heatmaps against lesion masks; None where a type has no lesion.
    Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.5."""
    from ...metrics.detection import LESION_NAMES, froc

    result = froc(list(heatmaps), list(masks), tolerance=FROC_TOLERANCE)
    areas = {LESION_NAMES[t]: area for t, area in result.per_type.items()} | {"mean_froc": result.mean}
    return {k: finite_or_none(v) for k, v in areas.items()}


def finite_or_none(value: float) -> float | None:
    """A score for JSON: None for NaN/Inf (undefined, e.g. an AUC with one class)."""
    return float(value) if value is not None and np.isfinite(value) else None
