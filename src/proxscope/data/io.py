"""Image and points I/O. Images: TIFF via tifffile, PNG/JPEG via scikit-image. Points: CSV in
pixel units, written as napari's points CSV (``index,axis-0,axis-1[,score,...]``, axis-0 = y =
row, axis-1 = x = column), read from that, ``y,x`` or Fiji's ``X,Y``. Every write is atomic: a
temporary file in the target folder, renamed into place only when complete.
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
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image file (predict takes a folder of images)")
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


#: The header :func:`write_points` writes: napari's own points CSV (``index,axis-0,axis-1``),
#: axis-0 = y (row), axis-1 = x (column), so napari opens the file as a points layer (its
#: built-in reader needs ``axis-*`` columns; a ``y,x`` header is not recognised there).
NAPARI_AXES = ("axis-0", "axis-1")


def _coordinate_columns(header: list[str], path: Path) -> tuple[int, int]:
    """(y column, x column) of a points CSV header: ``y,x`` (proxscope, spotiflow), napari's
    ``[index,]axis-0,axis-1`` (the last two axes of a 2-D layer) or Fiji/ImageJ's ``X,Y``
    (case-insensitive)."""
    lower = [h.lower() for h in header]
    axes = [h for h in lower if h.startswith("axis-")]
    if axes:
        if len(axes) != 2:
            raise UserError(f"{path}: napari points with {len(axes)} coordinates "
                            f"({','.join(axes)}); expected 2-D points (axis-0,axis-1)")
        return lower.index("axis-0"), lower.index("axis-1")
    if "y" in lower and "x" in lower:
        return lower.index("y"), lower.index("x")
    raise UserError(f"{path}: header must name the coordinates as y,x (proxscope), "
                    f"axis-0,axis-1 (napari) or X,Y (Fiji); got {','.join(header)}")


def read_points(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a points CSV -> (yx (N, 2) float array, {other numeric column: (N,) float array}).

    Accepted headers (comma, tab or semicolon separated): ``y,x[,...]``; napari's points
    export ``index,axis-0,axis-1[,...]`` (axis-0 = y); Fiji/ImageJ results ``X,Y[,...]`` (x =
    column, y = row, in pixels: an image calibrated in µm must be measured uncalibrated). Row
    numbers (napari's ``index``, Fiji's unnamed first column) and non-numeric columns (Fiji's
    ``Label``) are left out. A header without rows gives N = 0. Raises :class:`UserError` for
    a missing file, an unknown header, or non-numeric / NaN coordinates."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a points CSV file")
    if not path.is_file():
        raise UserError(f"points file not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read points CSV ({exc})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise UserError(f"{path}: empty points file (expected a header such as 'y,x')")
    delimiter = max(",\t;", key=lines[0].count)
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [h.strip() for h in rows[0]]
    iy, ix = _coordinate_columns(header, path)
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if any(len(r) != len(header) for r in body):
        raise UserError(f"{path}: ragged rows in points CSV (not {len(header)} columns each)")
    table = np.array(body, dtype=object).reshape(len(body), len(header))

    def numbers(i: int) -> np.ndarray | None:
        try:
            return table[:, i].astype(float)
        except ValueError:
            return None

    yx = [numbers(iy), numbers(ix)]
    if any(v is None for v in yx):
        raise UserError(f"{path}: non-numeric coordinates in points CSV")
    yx = np.stack(yx, axis=1).reshape(-1, 2)
    if not np.isfinite(yx).all():
        raise UserError(f"{path}: points CSV contains NaN or Inf")
    skip = {iy, ix} | {i for i, h in enumerate(header) if h in ("", "index", " ")}
    columns = {h: v for i, h in enumerate(header)
               if i not in skip and (v := numbers(i)) is not None}
    return yx, columns


def write_points(
    path: str | Path, yx: np.ndarray, columns: Mapping[str, np.ndarray] | None = None
) -> Path:
    """Write points (N, 2) (y, x) as napari's points CSV, atomically: header
    ``index,axis-0,axis-1`` (:data:`NAPARI_AXES`: axis-0 = y, axis-1 = x) + extra columns,
    which napari opens as a points layer with the extra columns as properties."""
    yx = np.asarray(yx, dtype=float).reshape(-1, 2)
    columns = {k: np.asarray(v, dtype=float).reshape(-1) for k, v in (columns or {}).items()}
    for name, values in columns.items():
        if len(values) != len(yx):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(yx)} points")
    header = ["index", *NAPARI_AXES, *columns]
    table = np.column_stack([yx, *columns.values()]) if columns else yx
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([[i, *(f"{v:.6g}" for v in row)] for i, row in enumerate(table)])
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
