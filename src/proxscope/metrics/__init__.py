"""Evaluation metrics: point matching, P/R/F1, reconstruction quality."""

from .points import MatchResult, best_threshold_f1, match_points, pool_matches, pooled_best_threshold
from .reconstruction import psnr

__all__ = ["MatchResult", "match_points", "best_threshold_f1", "pool_matches", "pooled_best_threshold", "psnr"]
