"""Image-level ROC AUC and lesion-level FROC from heatmaps.

Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.5: image-level performance is the area
A_z under the ROC curve; lesion-level performance is a free-response ROC (FROC) analysis per
lesion type, summarised by the area under the FROC curve for 0 <= x <= mu false positives per
image divided by mu (mu = 10), and by the mean of that area over the lesion types.

FROC protocol used here:

* candidates: the local maxima of each heatmap (``skimage.feature.peak_local_max`` with
  ``min_distance``; values must exceed the heatmap's minimum, or ``threshold_abs``), scored
  by their heatmap value;
* lesions: connected components (8-connectivity) of ``lesion_mask == type``;
* a candidate inside a lesion of that type (or within ``tolerance`` px of it) hits that lesion;
  each lesion counts once: later candidates in an already-hit lesion are neither true nor
  false positives; every other candidate is a false positive (``other_types="ignore"``
  instead skips candidates that fall on a lesion of another type);
* sweeping the score threshold from high to low gives, per distinct score, the sensitivity
  (lesions hit / lesions) and the mean number of false positives per image (over all images,
  including those without lesions); the curve starts at (0, 0), is linear between points
  (a step function when there are no ties) and is extended flat after the lowest threshold;
* area = integral of the curve over [0, max_fp] / max_fp, in [0, 1].

Conventions: a lesion type absent from every mask has area NaN and is left out of the mean;
images without candidates contribute no false positives; ``roc_auc`` is NaN when only one
class is present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import UserError

LESION_NAMES = {1: "microaneurysm", 2: "haemorrhage", 3: "hard_exudate", 4: "cotton_wool_spot"}
_EIGHT = np.ones((3, 3), bool)


def roc_auc(labels, scores) -> float:
    """Image-level area under the ROC curve (``sklearn.metrics.roc_auc_score``).

    ``labels``: 0/1 (or bool) per image, ``scores``: higher = more likely positive.
    Returns NaN when only one class is present (the AUC is undefined).
    Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.5 (A_z)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=float).ravel()
    if labels.shape != scores.shape:
        raise UserError(f"{len(labels)} labels but {len(scores)} scores")
    if not np.isfinite(scores).all():
        raise UserError("scores contain NaN or Inf")
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def heatmap_candidates(
    heatmap: np.ndarray, min_distance: int = 3, threshold_abs: float | None = None,
    max_candidates: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of a 2-D heatmap -> (yx (N, 2) int, scores (N,) float), highest first.
    Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.5."""
    from skimage.feature import peak_local_max

    heatmap = np.asarray(heatmap, dtype=float)
    if heatmap.ndim != 2:
        raise UserError(f"expected a 2-D heatmap, got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise UserError("heatmap contains NaN or Inf")
    yx = peak_local_max(
        heatmap, min_distance=max(int(min_distance), 1), threshold_abs=threshold_abs,
        exclude_border=False, num_peaks=np.inf if max_candidates is None else int(max_candidates),
    ).reshape(-1, 2)
    scores = heatmap[yx[:, 0], yx[:, 1]]
    order = np.argsort(-scores, kind="stable")
    return yx[order], scores[order]


@dataclass
class FrocCurve:
    """FROC curve of one lesion type: ``fp_per_image`` and ``sensitivity`` at each distinct
    score ``thresholds`` (first point (0, 0) at threshold +inf); ``area``: normalised area for
    0..max_fp false positives per image (NaN without lesions)."""

    fp_per_image: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    n_lesions: int
    n_images: int
    area: float

    def sensitivity_at(self, fp_per_image: float) -> float:
        """Highest sensitivity reached with at most ``fp_per_image`` false positives per image."""
        ok = self.fp_per_image <= fp_per_image
        return float(self.sensitivity[ok].max()) if ok.any() else 0.0


@dataclass
class FrocResult:
    curves: dict[int, FrocCurve]
    max_fp: float = 10.0
    names: dict[int, str] = field(default_factory=lambda: dict(LESION_NAMES))

    @property
    def per_type(self) -> dict[int, float]:
        """Normalised FROC area per lesion type (NaN for a type without lesions)."""
        return {t: c.area for t, c in self.curves.items()}

    @property
    def mean(self) -> float:
        """Mean area over the lesion types that have lesions (the seed's A_z bar); NaN if none."""
        areas = np.array([a for a in self.per_type.values() if np.isfinite(a)])
        return float(areas.mean()) if len(areas) else float("nan")

    def as_dict(self) -> dict:
        """JSON-friendly summary (None for NaN)."""

        def clean(v):
            return None if not np.isfinite(v) else float(v)

        return {
            "max_fp_per_image": self.max_fp,
            "mean_area": clean(self.mean),
            "per_type": {
                self.names.get(t, str(t)): {"area": clean(c.area), "n_lesions": c.n_lesions}
                for t, c in self.curves.items()
            },
        }


def froc_area(fp_per_image: np.ndarray, sensitivity: np.ndarray, max_fp: float = 10.0) -> float:
    """Area under a piecewise-linear FROC curve for 0 <= x <= max_fp, divided by max_fp. The
    points must be non-decreasing in x and start at x = 0; the curve is flat after the last."""
    x = np.asarray(fp_per_image, float)
    y = np.asarray(sensitivity, float)
    if len(x) == 0 or not np.isfinite(y).all():
        return float("nan")
    beyond = np.nonzero(x > max_fp)[0]
    if len(beyond):
        j = int(beyond[0])
        x0, y0, x1, y1 = x[j - 1], y[j - 1], x[j], y[j]
        y_end = y0 + (y1 - y0) * (max_fp - x0) / (x1 - x0)
        x, y = x[:j], y[:j]
    else:
        y_end = y[-1]
    x = np.append(x, max_fp)
    y = np.append(y, y_end)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / max_fp)


def froc(
    heatmaps: Sequence[np.ndarray],
    lesion_masks: Sequence[np.ndarray],
    lesion_types: Sequence[int] = (1, 2, 3, 4),
    min_distance: int = 3,
    max_fp: float = 10.0,
    threshold_abs: float | None = None,
    tolerance: float = 0.0,
    other_types: str = "fp",
    max_candidates: int | None = None,
) -> FrocResult:
    """Lesion-level FROC per lesion type from heatmap local maxima (module docstring).

    ``heatmaps``: 2-D arrays; ``lesion_masks``: integer arrays of the same shapes (0 = no
    lesion, else the lesion type); ``tolerance``: a candidate within this distance (px) of a
    lesion still hits it; ``other_types``: 'fp' (a candidate on a lesion of another type is a
    false positive) or 'ignore' (such candidates are skipped).
    Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.5."""
    if other_types not in ("fp", "ignore"):
        raise ValueError(f"other_types must be 'fp' or 'ignore', got {other_types!r}")
    heatmaps, lesion_masks = list(heatmaps), list(lesion_masks)
    if len(heatmaps) != len(lesion_masks):
        raise UserError(f"{len(heatmaps)} heatmaps but {len(lesion_masks)} lesion masks")
    if not heatmaps:
        raise UserError("no images to evaluate")
    candidates = []
    for i, (heatmap, mask) in enumerate(zip(heatmaps, lesion_masks, strict=True)):
        mask = np.asarray(mask)
        if np.shape(heatmap) != mask.shape:
            raise UserError(f"image {i}: heatmap shape {np.shape(heatmap)} != lesion mask shape {mask.shape}")
        candidates.append(heatmap_candidates(heatmap, min_distance, threshold_abs, max_candidates))
    n_images = len(heatmaps)
    curves = {}
    for t in lesion_types:
        scores, hits = [], []
        offset = 0
        for (yx, sc), mask in zip(candidates, lesion_masks, strict=True):
            mask = np.asarray(mask)
            labels, n = ndimage.label(mask == t, structure=_EIGHT)
            hit = _hit_labels(labels, yx, tolerance) if n else np.zeros(len(yx), int)
            use = np.ones(len(yx), bool)
            if other_types == "ignore" and len(yx):
                on = mask[yx[:, 0], yx[:, 1]]
                use = (hit > 0) | (on == 0) | (on == t)
            scores.append(sc[use])
            hits.append(np.where(hit[use] > 0, hit[use] + offset, 0))
            offset += n
        curves[t] = _curve(np.concatenate(scores), np.concatenate(hits), offset, n_images, max_fp)
    return FrocResult(curves, float(max_fp))


def _hit_labels(labels: np.ndarray, yx: np.ndarray, tolerance: float) -> np.ndarray:
    """Lesion label under each candidate (0 = none), or of the nearest lesion pixel within
    ``tolerance`` px."""
    if len(yx) == 0:
        return np.zeros(0, int)
    hit = labels[yx[:, 0], yx[:, 1]].astype(int)
    if tolerance > 0:
        dist, (ny, nx) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        near = labels[ny[yx[:, 0], yx[:, 1]], nx[yx[:, 0], yx[:, 1]]]
        close = dist[yx[:, 0], yx[:, 1]] <= tolerance
        hit = np.where(hit > 0, hit, np.where(close, near, 0))
    return hit


def _curve(scores, hits, n_lesions, n_images, max_fp) -> FrocCurve:
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    first = np.zeros(len(hits), bool)
    if len(hits):
        _, idx = np.unique(hits, return_index=True)
        first[idx] = True
    tp = np.cumsum(first & (hits > 0))
    fp = np.cumsum(hits == 0)
    # one point per distinct score: the counts after its last candidate
    ends = np.nonzero(np.append(scores[1:] != scores[:-1], True))[0] if len(scores) else np.zeros(0, int)
    fps = np.concatenate([[0.0], fp[ends] / n_images])
    if n_lesions:
        sens = np.concatenate([[0.0], tp[ends] / n_lesions])
        area = froc_area(fps, sens, max_fp)
    else:
        sens = np.full(len(fps), np.nan)
        area = float("nan")
    thresholds = np.concatenate([[np.inf], scores[ends]])
    return FrocCurve(fps, sens, thresholds, int(n_lesions), int(n_images), area)
