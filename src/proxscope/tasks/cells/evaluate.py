"""``cells evaluate``: precision / recall / F1 of predicted against annotated centroids.

A prediction is a true positive when it lies within ``radius`` (ρ) pixels of a not yet matched
annotated centroid (one-to-one matching, core :func:`~proxscope.metrics.match_points`); the
seed sets ρ to the radius of the smallest cell. ``pred`` and ``truth`` are two CSV files or
two folders of CSV files matched by name (the counts are pooled over the files).

Seed: cnncs-cell-detection-compressed-sensing.txt Sec. 4.2 (P = TP/(TP+FP), R = TP/(TP+FN),
F1 = 2PR/(P+R)).
"""

from __future__ import annotations

from pathlib import Path

from ...data.io import read_points
from ...errors import UserError
from ...metrics import match_points

DEFAULT_RADIUS = 4.0  # pixels: the smallest simulated target radius is 3.5 px


def _pairs(pred: Path, truth: Path) -> list[tuple[Path, Path]]:
    if pred.is_dir() != truth.is_dir():
        raise UserError("--pred and --truth must both be CSV files or both be folders")
    if not pred.is_dir():
        return [(pred, truth)]
    files = sorted(truth.glob("*.csv"))
    if not files:
        raise UserError(f"{truth}: no .csv files")
    missing = [f.name for f in files if not (pred / f.name).is_file()]
    if missing:
        raise UserError(f"{pred}: no prediction for {missing[0]} ({len(missing)} missing)")
    return [(pred / f.name, f) for f in files]


def evaluate(pred: str | Path, truth: str | Path, radius: float) -> dict:
    """Pooled {'tp', 'fp', 'fn', 'precision', 'recall', 'f1', 'radius', 'files'}."""
    if radius <= 0:
        raise UserError(f"--radius must be positive, got {radius}")
    tp = fp = fn = 0
    pairs = _pairs(Path(pred), Path(truth))
    for p, t in pairs:
        r = match_points(read_points(p)[0], read_points(t)[0], radius)
        tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "radius": radius,
        "files": len(pairs),
    }
