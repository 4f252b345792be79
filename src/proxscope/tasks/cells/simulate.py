"""``cells simulate``: write DIR/images/NAME.tif (uint16) and DIR/points/NAME.csv (y, x)."""

from __future__ import annotations

from pathlib import Path

from ...data.io import write_image, write_points
from ...sim.cells import CellSimConfig, simulate, to_uint16


def write_dataset(
    out: str | Path, n_images: int, size: int, seed: int, config: CellSimConfig | None = None
) -> list[str]:
    """Simulate ``n_images`` images of ``size``² pixels; returns the image names."""
    out = Path(out)
    names = []
    for i, (image, points) in enumerate(simulate(n_images, size, seed, config)):
        name = f"cells_{i:04d}"
        write_image(out / "images" / f"{name}.tif", to_uint16(image))
        write_points(out / "points" / f"{name}.csv", points)
        names.append(name)
    return names
