"""``seg evaluate``: accuracy, mIoU, per-class IoU and RE (seed eq. 4.1) of predicted masks.

One pair of files gives :func:`~proxscope.metrics.segmentation.segmentation_report` plus its
confusion matrix; folders are pooled as a test set is in the seed's tables: accuracy and IoU
from the confusion matrices summed over images (i.e. over all pixels), RE averaged over images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError
from ...metrics.segmentation import (
    accuracy,
    class_iou,
    confusion_matrix,
    mean_iou,
    segmentation_report,
)
from .data import read_label_map


def score_masks(pred: Path, truth: Path) -> dict:
    """Scores of one predicted mask file against its truth; ``confusion``: rows = true class,
    columns = predicted class. Raises :class:`UserError` when the shapes differ."""
    a, b = read_label_map(pred), read_label_map(truth)
    if a.shape != b.shape:
        raise UserError(f"{pred}: shape {a.shape} differs from ground truth {truth} {b.shape}")
    return segmentation_report(a, b) | {"confusion": confusion_matrix(a, b).tolist()}


def pool_scores(scores: list[dict]) -> dict:
    """Accuracy, mIoU and IoU of the summed confusion matrices; RE and RE of the truth averaged
    over images (as :func:`segmentation_report` of a list of masks)."""
    n = max(len(s["confusion"]) for s in scores)
    cm = sum(np.pad(s["confusion"], (0, n - len(s["confusion"]))) for s in scores)
    # The label pairs the summed confusion matrix counts (truth, pred), for the metric functions.
    truth, pred = np.divmod(np.repeat(np.arange(n * n), cm.ravel()), n)
    return {
        "accuracy": accuracy(pred, truth),
        "miou": mean_iou(pred, truth, n),
        "iou": [None if np.isnan(v) else float(v) for v in class_iou(pred, truth, n)],
        "re": float(np.mean([s["re"] for s in scores])),
        "re_truth": float(np.mean([s["re_truth"] for s in scores])),
        "n_images": len(scores),
        "n_pixels": int(cm.sum()),
    }
