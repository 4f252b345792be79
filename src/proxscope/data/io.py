"""Image and points I/O. Images: TIFF via tifffile, PNG/JPEG via scikit-image. Points: CSV with a
header ``y,x[,score,...]`` in pixel units (row, column: the order napari reads). Every write is
atomic: a temporary file in the target folder, renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ..errors import UserError

TIFF_SUFFIXES = {".tif", ".tiff"}
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds,
    delete it otherwise (so a crash never leaves a partial output file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        # mkstemp creates 0600 (and some writers recreate the file): the usual permissions
        tmp.chmod(0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def to_json(payload) -> str:
    """Indented strict JSON: NaN and +-Inf (undefined scores, e.g. the threshold of an empty
    prediction) become null, which every JSON reader accepts; NumPy scalars become numbers."""
    import json
    import math

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return json.dumps(clean(payload), indent=2, default=float, allow_nan=False)


def write_json(path: str | Path, payload) -> Path:
    """Write ``payload`` as indented strict JSON (:func:`to_json`), atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(to_json(payload))
    return Path(path)


def read_image(path: str | Path, allow_nonfinite: bool = False) -> np.ndarray:
    """Read an image as a NumPy array with its own dtype and shape.

    Raises :class:`UserError` for a missing, unreadable or empty file, or NaN/Inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            image = tifffile.imread(path)
        elif suffix in RASTER_SUFFIXES:
            import skimage.io

            image = skimage.io.imread(path)
        else:
            raise UserError(f"{path}: unsupported image type '{suffix}' (use .tif, .png or .jpg)")
    except UserError:
        raise
    except Exception as exc:  # tifffile/imageio raise many types for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"{path}: not a readable image ({type(exc).__name__}: {first})") from None
    image = np.asarray(image)
    if image.size == 0:
        raise UserError(f"{path}: image is empty")
    if not allow_nonfinite and np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise UserError(f"{path}: image contains NaN or Inf values")
    return image


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an array as TIFF (any dtype) or PNG/JPEG (uint8/uint16), atomically."""
    path = Path(path)
    image = np.asarray(image)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            # An (H, W, 3|4) image is colour; anything else (including C x H x W stacks with
            # C = 3 or 4, e.g. orientation or class channels) is a stack of grey planes.
            rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
            tifffile.imwrite(tmp, image, photometric="rgb" if rgb else "minisblack")
        elif suffix in RASTER_SUFFIXES:
            import imageio.v3 as iio

            iio.imwrite(tmp, image, extension=suffix)
        else:
            raise UserError(f"{path}: unsupported output type '{suffix}' (use .tif or .png)")
    return path


def read_points(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a points CSV -> (yx (N, 2) float array, {other column: (N,) float array}).

    The header must contain ``y`` and ``x``; an empty file body gives N = 0.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"points file not found: {path}")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read points CSV ({exc})") from None
    if not rows:
        raise UserError(f"{path}: empty points file (expected a header 'y,x')")
    header = [h.strip() for h in rows[0]]
    if "y" not in header or "x" not in header:
        raise UserError(f"{path}: header must contain 'y' and 'x', got {','.join(header)}")
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    try:
        table = np.array(body, dtype=float).reshape(len(body), len(header))
    except ValueError:
        raise UserError(f"{path}: non-numeric or ragged rows in points CSV") from None
    if not np.isfinite(table).all():
        raise UserError(f"{path}: points CSV contains NaN or Inf")
    columns = {name: table[:, i] for i, name in enumerate(header)}
    yx = np.stack([columns.pop("y"), columns.pop("x")], axis=1)
    return yx, columns


def write_points(
    path: str | Path, yx: np.ndarray, columns: Mapping[str, np.ndarray] | None = None
) -> Path:
    """Write points (N, 2) as CSV with header ``y,x`` + extra columns, atomically."""
    yx = np.asarray(yx, dtype=float).reshape(-1, 2)
    columns = {k: np.asarray(v, dtype=float).reshape(-1) for k, v in (columns or {}).items()}
    for name, values in columns.items():
        if len(values) != len(yx):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(yx)} points")
    header = ["y", "x", *columns]
    table = np.column_stack([yx, *columns.values()]) if columns else yx
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([[f"{v:.6g}" for v in row] for row in table])
    return Path(path)


IMAGE_SUFFIXES = TIFF_SUFFIXES | RASTER_SUFFIXES


def expand_inputs(spec: str | Path) -> list[Path]:
    """Image files named by ``spec``: one file, every image in a folder (sorted, not recursive),
    or the matches of a glob pattern (``data/*.tif``). Raises :class:`UserError` when nothing
    matches."""
    import glob

    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UserError(f"{path}: folder holds no images (.tif, .png, .jpg)")
        return images
    if glob.has_magic(str(spec)):
        images = sorted(Path(p) for p in glob.glob(str(spec)) if Path(p).is_file())
        if not images:
            raise UserError(f"no file matches {spec}")
        return images
    raise UserError(f"image not found: {path}")


def pair_files(
    pred: Path, truth: Path, suffixes: tuple[str, ...], filename: str | None = None
) -> dict[str, tuple[Path, Path]]:
    """Pair the files under two folders by image name -> ``{name: (pred, truth)}``.

    A file's name is its path below the folder without suffix; a file called ``filename``
    (e.g. ``cells.csv`` in a per-image folder) is named after its folder. Predictions without a
    truth are left out. Raises :class:`UserError` when a folder is missing, no name is in both,
    or a truth file (with ``filename``: a truth file of that name) has no prediction (scores
    over the rest would silently leave it out)."""

    def names(root: Path) -> dict[str, Path]:
        if not root.is_dir():
            raise UserError(f"{root}: expected a folder (give two files or two folders)")
        found = {}
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix.lower() in suffixes:
                rel = p.relative_to(root)
                key = rel.parent if filename is not None and p.name == filename else rel.with_suffix("")
                found.setdefault(key.as_posix(), p)
        return found

    pred_files, truth_files = names(pred), names(truth)
    common = sorted(set(pred_files) & set(truth_files))
    if not common:
        raise UserError(f"no prediction in {pred} has a truth of the same name in {truth}")
    expected = {k for k, p in truth_files.items() if filename is None or p.name == filename}
    missing = sorted(expected - set(pred_files))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UserError(f"{len(missing)} truth file(s) in {truth} have no prediction in {pred}: {shown}")
    return {name: (pred_files[name], truth_files[name]) for name in common}


def check_writable(path: str | Path, is_dir: bool | None = None) -> Path:
    """Check before any computation that ``path`` can be written (as a folder when ``is_dir``,
    a file when False, either when None): its first existing ancestor must be a writable
    folder. Returns the path; raises :class:`UserError` with one line otherwise."""
    path = Path(path)
    if path.exists():
        if is_dir is True and not path.is_dir():
            raise UserError(f"cannot write into {path}: it is a file, not a folder")
        if is_dir is False and path.is_dir():
            raise UserError(f"cannot write {path}: it is a folder")
    parent = path if path.exists() and path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError:
        raise UserError(f"cannot write {path}: {parent} is not writable") from None
    return path


def write_table(path: str | Path, rows: list[Mapping]) -> Path:
    """Write dict rows as CSV (columns: the union of keys in first-seen order), atomically."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)
