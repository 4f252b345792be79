"""``seg simulate``: write white-blood-cell-like phantoms as a training / test set on disk.

Layout: OUT/images/sim_000.tif (uint8 RGB) and OUT/masks/sim_000.tif (uint8 class ids:
0 background, 1 cytoplasm, 2 nucleus), optionally with Gaussian or salt-and-pepper noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.io import write_image
from ...errors import UserError
from ...sim.segmentation import add_noise, simulate_wbc


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding."""
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def simulate_to_folder(
    out: str | Path, n_images: int, size: int, seed: int, gaussian: float = 0.0,
    salt_pepper: float = 0.0,
) -> list[str]:
    """Write ``n_images`` phantoms of ``size`` x ``size``; returns the image names."""
    if n_images < 1:
        raise UserError("--n-images must be at least 1")
    if size < 32:
        raise UserError("--size must be at least 32 pixels")
    if not 0 <= gaussian <= 1 or not 0 <= salt_pepper <= 1:
        raise UserError("--gaussian and --salt-pepper must be in [0, 1]")
    out = Path(out)
    names = []
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        image, mask = simulate_wbc(size, rng)
        image = add_noise(image, "gaussian", gaussian, rng)
        image = add_noise(image, "salt_pepper", salt_pepper, rng)
        name = f"sim_{i:03d}"
        write_image(out / "masks" / f"{name}.tif", mask)
        write_image(out / "images" / f"{name}.tif", to_uint8(image))
        names.append(name)
    return names
