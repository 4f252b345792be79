"""Semantic segmentation metrics on label maps (integer class ids): global accuracy, per-class
IoU, mIoU and the regularization effect RE of Jia, Liu & Tai.

All functions take NumPy arrays of the same shape (H, W) or (N, H, W); metrics over a stack are
pooled over all its pixels (as for a test set), except RE, which is averaged over images.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = true class, columns = predicted class."""
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {truth.shape}")
    pred = pred.astype(np.int64).ravel()
    truth = truth.astype(np.int64).ravel()
    if pred.size and min(pred.min(), truth.min()) < 0:
        raise ValueError("class ids must be non-negative")
    if n_classes is None:
        n_classes = int(max(pred.max(initial=0), truth.max(initial=0))) + 1
    counts = np.bincount(truth * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Global pixel accuracy in [0, 1]: the fraction of pixels with the right class."""
    cm = confusion_matrix(pred, truth)
    return float(np.trace(cm) / max(cm.sum(), 1))


def class_iou(pred: np.ndarray, truth: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN), shape (n_classes,); NaN for a class absent from both."""
    cm = confusion_matrix(pred, truth, n_classes).astype(np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(pred: np.ndarray, truth: np.ndarray, n_classes: int | None = None) -> float:
    """mIoU: the mean of the per-class IoU over classes present in prediction or truth."""
    iou = class_iou(pred, truth, n_classes)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def regularization_effect(u: np.ndarray) -> float:
    """RE(u) = 100/(N1·N2) · sum_ij |grad u_ij|_2 of a label map u (seed eq. 4.1), with forward
    differences (zero across the last row / column, seed eq. 4.2). Lower = smoother, fewer
    isolated regions. For a stack (N, H, W) the mean over images."""
    import torch

    from ..layers.tv import gradient_magnitude

    u = torch.as_tensor(np.asarray(u, dtype=np.float64))
    if u.ndim == 2:
        u = u[None]
    per_image = 100.0 * gradient_magnitude(u[:, None]).mean(dim=(1, 2, 3))
    return float(per_image.mean())


def _label_maps(maps) -> list[np.ndarray]:
    if isinstance(maps, np.ndarray) and maps.ndim == 2:
        return [maps]
    return [np.asarray(m) for m in maps]


def segmentation_report(preds, truths, n_classes: int | None = None) -> dict:
    """All metrics as a JSON-able dict for one label map (H, W) or a list of them: accuracy, mIoU
    and per-class IoU pooled over all pixels, RE of the predictions and of the truth averaged
    over images. Accuracy, mIoU and IoU are fractions in [0, 1] (the seed's tables show ×100).
    """
    preds, truths = _label_maps(preds), _label_maps(truths)
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} ground-truth masks")
    for p, t in zip(preds, truths, strict=True):
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {p.shape} differs from ground truth {t.shape}")
    pred = np.concatenate([p.ravel() for p in preds])
    truth = np.concatenate([t.ravel() for t in truths])
    if n_classes is None:
        n_classes = int(max(pred.max(), truth.max())) + 1
    iou = class_iou(pred, truth, n_classes)
    return {
        "accuracy": accuracy(pred, truth),
        "miou": mean_iou(pred, truth, n_classes),
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "re": float(np.mean([regularization_effect(p) for p in preds])),
        "re_truth": float(np.mean([regularization_effect(t) for t in truths])),
        "n_images": len(preds),
        "n_pixels": int(truth.size),
    }
