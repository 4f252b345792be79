"""``seg evaluate``: accuracy, mIoU, per-class IoU and RE (seed eq. 4.1) of predicted masks.

``pred`` and ``truth`` are two mask files or two folders (masks matched by file name stem);
for folders the accuracy / IoU are pooled over all pixels and RE is averaged over images.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import UserError
from ...metrics.segmentation import segmentation_report
from .data import MASK_SUFFIXES, read_label_map


def _mask_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in MASK_SUFFIXES}


def evaluate_paths(pred: str | Path, truth: str | Path) -> dict:
    """Metrics of predicted mask(s) against ground truth; see the module docstring."""
    pred, truth = Path(pred), Path(truth)
    if pred.is_dir() != truth.is_dir():
        raise UserError("--pred and --truth must both be files or both be folders")
    if pred.is_dir():
        pred_files, truth_files = _mask_files(pred), _mask_files(truth)
        missing = sorted(set(truth_files) - set(pred_files))
        if not truth_files:
            raise UserError(f"{truth}: no masks (.tif, .png)")
        if missing:
            raise UserError(f"{pred}: no prediction for {len(missing)} masks, e.g. {missing[0]}")
        pairs = [(pred_files[k], truth_files[k]) for k in truth_files]
    else:
        pairs = [(pred, truth)]
    preds, truths = [], []
    for p, t in pairs:
        a, b = read_label_map(p), read_label_map(t)
        if a.shape != b.shape:
            raise UserError(f"{p}: shape {a.shape} differs from ground truth {t} {b.shape}")
        preds.append(a)
        truths.append(b)
    return segmentation_report(preds, truths)
