"""Detection scores: one-to-one matching within a radius (default 3 px), precision / recall /
F1 at a fixed score threshold and the best F1 over thresholds per image (the paper's protocol).

The best F1 over thresholds and the pooled validation threshold come from the core
:func:`proxscope.metrics.best_threshold_f1` / :func:`~proxscope.metrics.pooled_best_threshold`.
Seed: spotnet-fluorospot-learned-iterations.txt Sec. 4 (F1 of thresholded local maxima).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...metrics import best_threshold_f1, match_points

RADIUS = 3.0


def score_image(
    yx: np.ndarray, scores: np.ndarray, truth: np.ndarray, threshold: float, radius: float = RADIUS
) -> dict:
    """P/R/F1 of the detections with score >= threshold, and the best F1 over thresholds."""
    result = match_points(yx[scores >= threshold], truth, radius).as_dict()
    f1, best_threshold = best_threshold_f1(yx, scores, truth, radius)
    return result | {"best_f1": f1, "best_threshold": best_threshold}


def evaluate_files(
    pred_csv: str | Path, truth_csv: str | Path, radius: float = RADIUS, threshold: float | None = None
) -> dict:
    """Scores of a predicted cells CSV (y,x[,score]) against a true one (y,x). Without a
    ``score`` column every prediction counts; ``threshold`` filters by score."""
    from ...data.io import read_points
    from ...errors import UserError

    if radius <= 0:
        raise UserError(f"--radius must be positive, got {radius}")
    pred, columns = read_points(pred_csv)
    truth, _ = read_points(truth_csv)
    scores = columns.get("score", np.ones(len(pred)))
    if threshold is None:
        result = match_points(pred, truth, radius).as_dict()
        if "score" in columns:
            f1, best_threshold = best_threshold_f1(pred, scores, truth, radius)
            result |= {"best_f1": f1, "best_threshold": best_threshold}
    else:
        result = score_image(pred, scores, truth, threshold, radius)
    return result | {"radius": radius, "n_pred": int(len(pred)), "n_truth": int(len(truth))}
