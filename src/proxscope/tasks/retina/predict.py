"""``retina predict``: referral probability, lesion heatmap and overlay for fundus photographs.

Per photograph, in the output folder: ``score.json`` (``{"referable_probability": p, ...}``),
``heatmap.tif`` (float32, the photograph's height x width; zero outside the field of view) and
``overlay.png`` (the heatmap over the photograph).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.fundus import heatmap_to_image, preprocess_fundus
from ...data.io import read_image, write_image, write_json
from .model import score_and_heatmaps


def load_model(name_or_path: str, device: str | None = None):
    """(model in eval mode, checkpoint metadata) for a bundled name or a checkpoint path."""
    from ...models import load
    from ...models.retina import AlexNetLike, NetB
    from ...utils import resolve_device

    model, extra = load(name_or_path, device=resolve_device(device), expected=(NetB, AlexNetLike))
    return model, extra


def predict_photo(model, photo: np.ndarray, method: str = "hue", source: str = "image"):
    """(referable probability, heatmap (H, W) float32 on the photograph) for one RGB photograph
    (H, W, 3) of any size. UserError for a non-RGB or blank photograph."""
    from ...errors import UserError

    size = model.config.input_size
    try:
        pre = preprocess_fundus(photo, fov_width=size)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    p, maps = score_and_heatmaps(model, pre.image[None], method, fov=pre.fov_mask[None])
    return float(p[0]), heatmap_to_image(maps[0], pre.geometry)


def overlay(photo: np.ndarray, heatmap: np.ndarray, p: float) -> np.ndarray:
    """RGB uint8: the photograph with the heatmap (scaled to its 99.9th percentile) in a hot
    colour map, at most 70 % opaque, and weighted by the referral probability ``p``: every map
    has a maximum, so an unweighted overlay would paint "lesions" on a healthy eye."""
    from matplotlib import colormaps

    rgb = np.asarray(photo)[..., :3].astype(np.float32)
    rgb = rgb / max(float(rgb.max()), 1e-8)
    top = float(np.percentile(heatmap[heatmap > 0], 99.9)) if (heatmap > 0).any() else 1.0
    level = 0.7 * p * np.clip(heatmap / max(top, 1e-12), 0, 1)[..., None]
    colour = colormaps["hot"](level[..., 0])[..., :3]
    return (255 * ((1 - level) * rgb * 0.8 + level * colour)).astype(np.uint8)


def predict_to_dir(model, image: Path, out: Path, method: str = "hue", model_name: str = "") -> dict:
    """Predict one photograph file and write ``out/score.json``, ``heatmap.tif``, ``overlay.png``."""
    photo = read_image(image)
    p, heatmap = predict_photo(model, photo, method, source=str(image))
    write_image(out / "heatmap.tif", heatmap.astype(np.float32))
    if photo.ndim == 3 and photo.shape[-1] in (3, 4):
        write_image(out / "overlay.png", overlay(photo, heatmap, p))
    summary = {"referable_probability": p, "method": method, "model": model_name, "image": image.stem}
    write_json(out / "score.json", summary)
    return summary
