"""``retina evaluate``: image-level ROC AUC and lesion-level FROC of a ``retina predict`` folder
against a dataset folder (``labels.csv`` + optional ``lesions/NAME.tif``).

Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.5 (A_z of the ROC; FROC area for 0-10
false positives per image divided by 10, per lesion type and averaged).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...data.io import read_image
from ...errors import UserError
from .data import read_labels


def read_predictions(pred: Path) -> dict[str, Path]:
    """{image name: its prediction folder} for every ``score.json`` in ``pred`` or its
    subfolders; the name is the photograph's, as ``score.json`` records it (older outputs: the
    folder's name)."""
    if (pred / "score.json").is_file():
        folders = [pred]
    else:
        folders = sorted(p.parent for p in pred.glob("*/score.json"))
    found = {json.loads((f / "score.json").read_text()).get("image", f.name): f for f in folders}
    if not found:
        raise UserError(f"{pred}: no NAME/score.json (the output of 'retina predict')")
    return found


def evaluate(pred: Path, truth: Path) -> dict:
    """Scores of the predictions in folder ``pred`` against dataset folder ``truth``:
    ``{"images", "auc", "froc": {lesion type: area, "mean_froc": ...} | None, "per_image":
    {name: {"referable_probability", "referable"}}}``."""
    from ...metrics.detection import roc_auc
    from .model import finite_or_none, lesion_scores

    if not truth.is_dir():
        raise UserError(f"--truth must be a dataset folder with labels.csv, got {truth}")
    labels = read_labels(truth / "labels.csv")
    predictions = read_predictions(pred)
    names = sorted(set(predictions) & set(labels))
    if not names:
        raise UserError(f"no prediction in {pred} has a label in {truth / 'labels.csv'}")
    scores = np.array([json.loads((predictions[n] / "score.json").read_text())["referable_probability"]
                       for n in names], dtype=float)
    auc = roc_auc(np.array([labels[n] for n in names]), scores)
    result = {"images": len(names), "auc": finite_or_none(auc), "froc": None,
              "per_image": {n: {"referable_probability": float(p), "referable": int(labels[n])}
                            for n, p in zip(names, scores, strict=True)}}
    lesions = truth / "lesions"
    if lesions.is_dir():
        maps = [read_image(predictions[n] / "heatmap.tif") for n in names]
        masks = [read_image(lesions / f"{n}.tif") for n in names]
        for n, h, m in zip(names, maps, masks, strict=True):
            if h.shape != m.shape:
                raise UserError(f"{n}: heatmap {h.shape} and lesion mask {m.shape} differ in size")
        result["froc"] = lesion_scores(maps, masks)
    return result
