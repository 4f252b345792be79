"""Truth-based scores of a recovered SPoD image, on the field of view.

The recovery x and the truth are (c, H+a−1, W+b−1) (orientation channel k ↔ angle kπ/c); the
field of view is the part whose PSF centre falls inside the observed H×W pixels (a border of
(a−1)/2 px is seen only partly and is not scored). Scores (issue 15):

- ``psnr_db``: PSNR of the orientation-summed images after a 1 px Gaussian blur (a recovery one
  pixel off is not a miss), with ``psnr_zero_db``, the same for an all-zero image;
- ``correlation``: Pearson correlation of those blurred images;
- ``dot_precision/recall/f1``: isolated truth pixels (no other structure within 4 px) vs local
  maxima of the blurred recovered sum whose mass within 2 px reaches a quarter of the median true
  dot,
  matched within 2 px; peaks within 2 px of a filament are not counted either way;
- ``within_2px``: fraction of the recovered intensity within 2 px of a true structure;
- ``orientation_error_deg``: intensity-weighted mean angle between recovered and true
  orientation on the true structure pixels (doubled-angle means of both within 1 px).

Values that are undefined (a blank recovery or truth) are None.
"""

from __future__ import annotations

import numpy as np

RADIUS = 2.0


def field_of_view(psf_shape: tuple[int, int]) -> tuple[int, int]:
    """Top-left offset (rows, cols) of the field of view in x: ((a−1)//2, (b−1)//2)."""
    return (psf_shape[0] - 1) // 2, (psf_shape[1] - 1) // 2


def _crop(image: np.ndarray, offset: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    return image[..., offset[0]:offset[0] + shape[0], offset[1]:offset[1] + shape[1]]


def _disk(radius: float) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return yy**2 + xx**2 <= radius**2


def _orientation_vector(x: np.ndarray) -> np.ndarray:
    """Σ_k x_k·exp(2i·kπ/c): the doubled-angle orientation vector (H, W)."""
    c = x.shape[0]
    return np.tensordot(np.exp(2j * np.pi * np.arange(c) / c), x, axes=1)


def _psnr(pred: np.ndarray, ref: np.ndarray) -> float | None:
    peak = float(ref.max())
    mse = float(((pred - ref) ** 2).mean())
    if peak <= 0:
        return None
    return float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")


def _match(pred: np.ndarray, true: np.ndarray, radius: float) -> int:
    """Greedy one-to-one matches of points (n, 2) within ``radius``, closest pairs first."""
    if len(pred) == 0 or len(true) == 0:
        return 0
    dist = np.linalg.norm(pred[:, None, :] - true[None, :, :], axis=-1)
    pairs = np.argwhere(dist <= radius)
    used_p, used_t, n = set(), set(), 0
    for i, j in pairs[np.argsort(dist[pairs[:, 0], pairs[:, 1]], kind="stable")]:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            n += 1
    return n


def fidelity(recovered: np.ndarray, truth: np.ndarray, psf_shape: tuple[int, int]
             ) -> dict[str, float | None]:
    """Scores of ``recovered`` against ``truth`` (both (c, H+a−1, W+b−1), the same units) on
    the field of view for a PSF of ``psf_shape`` (see the module docstring)."""
    from scipy import ndimage

    if recovered.shape != truth.shape:
        raise ValueError(f"recovered {recovered.shape} and truth {truth.shape} differ in shape")
    a, b = psf_shape
    offset, shape = field_of_view(psf_shape), (truth.shape[1] - a + 1, truth.shape[2] - b + 1)
    rec_sum, true_sum = recovered.sum(0).astype(np.float64), truth.sum(0).astype(np.float64)
    rec_blur = ndimage.gaussian_filter(rec_sum, 1.0, mode="constant")
    true_blur = ndimage.gaussian_filter(true_sum, 1.0, mode="constant")
    rb, tb = _crop(rec_blur, offset, shape), _crop(true_blur, offset, shape)
    corr = None
    if rb.std() > 0 and tb.std() > 0:
        corr = float(np.corrcoef(rb.ravel(), tb.ravel())[0, 1])

    support = true_sum > 0
    near = ndimage.binary_dilation(support, _disk(RADIUS))
    rec_fov = _crop(rec_sum, offset, shape)
    total = float(rec_fov.sum())
    within = float(rec_fov[_crop(near, offset, shape)].sum() / total) if total > 0 else None

    # Dots: truth pixels with no other structure within 2·RADIUS px.
    neighbours = ndimage.convolve(support.astype(int), _disk(2 * RADIUS).astype(int),
                                  mode="constant")
    dots = support & (neighbours == 1)
    filament_zone = ndimage.binary_dilation(support & ~dots, _disk(RADIUS))
    dot_values = true_sum[dots]
    level = 0.25 * float(np.median(dot_values)) if dot_values.size else 0.25 * float(
        np.median(true_sum[support])) if support.any() else 0.0
    mass = ndimage.convolve(rec_sum, _disk(RADIUS).astype(float), mode="constant")
    peaks = (rec_blur == ndimage.maximum_filter(rec_blur, size=3, mode="constant")) & (
        rec_blur > 0) & (mass >= level) & ~filament_zone
    in_fov = np.zeros_like(support)
    _crop(in_fov, offset, shape)[...] = True
    pred_pts, true_pts = np.argwhere(peaks & in_fov), np.argwhere(dots & in_fov)
    tp = _match(pred_pts.astype(float), true_pts.astype(float), RADIUS)
    precision = tp / len(pred_pts) if len(pred_pts) else None
    recall = tp / len(true_pts) if len(true_pts) else None
    f1 = 2 * tp / (len(pred_pts) + len(true_pts)) if len(pred_pts) + len(true_pts) else None

    # Orientation: doubled-angle mean of the recovery within 1 px, at true structure pixels.
    rec_vec, true_vec = (_orientation_vector(ndimage.uniform_filter(
        v.astype(np.float64), size=(1, 3, 3), mode="constant")) for v in (recovered, truth))
    sel = support & in_fov & (np.abs(rec_vec) > 0)
    angle = None
    if sel.any():
        diff = np.abs(np.angle(rec_vec[sel] * np.conj(true_vec[sel]))) / 2
        angle = float(np.degrees(np.average(diff, weights=true_sum[sel])))
    return {
        "psnr_db": _psnr(rb, tb), "psnr_zero_db": _psnr(np.zeros_like(tb), tb),
        "correlation": corr, "dot_precision": precision, "dot_recall": recall, "dot_f1": f1,
        "dots_true": int(len(true_pts)), "dots_found": int(len(pred_pts)),
        "within_2px": within, "orientation_error_deg": angle,
    }
