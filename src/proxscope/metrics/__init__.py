"""Evaluation metrics: point matching, P/R/F1, reconstruction quality, ROC AUC and lesion FROC."""

from .detection import FrocCurve, FrocResult, froc, froc_area, heatmap_candidates, roc_auc
from .points import MatchResult, best_threshold_f1, match_points, pool_matches, pooled_best_threshold
from .reconstruction import psnr

__all__ = [
    "MatchResult", "match_points", "best_threshold_f1", "pool_matches", "pooled_best_threshold", "psnr",
    "roc_auc", "froc", "froc_area", "heatmap_candidates", "FrocCurve", "FrocResult",
]
