"""Image / points I/O, atomic writes, normalisation and tiling."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from proxscope.data.io import atomic_path, read_image, read_points, write_image, write_points
from proxscope.data.tiling import tiled_apply
from proxscope.data.transforms import percentile_normalize, to_channels_first
from proxscope.errors import UserError


@pytest.mark.parametrize("suffix,dtype", [(".tif", np.float32), (".tif", np.uint16), (".png", np.uint8)])
def test_image_round_trip(tmp_path, suffix, dtype):
    image = (np.arange(60).reshape(5, 12) * 3).astype(dtype)
    path = write_image(tmp_path / f"a{suffix}", image)
    back = read_image(path)
    assert back.dtype == dtype and np.array_equal(back, image)


def test_read_image_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_image(tmp_path / "missing.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(UserError, match="not a readable image"):
        read_image(bad)
    nan = np.ones((4, 4), np.float32)
    nan[1, 1] = np.nan
    write_image(tmp_path / "nan.tif", nan)
    with pytest.raises(UserError, match="NaN"):
        read_image(tmp_path / "nan.tif")
    write_image(tmp_path / "empty.tif", np.zeros((0, 4), np.float32))
    with pytest.raises(UserError, match="empty"):
        read_image(tmp_path / "empty.tif")
    with pytest.raises(UserError, match="unsupported"):
        (tmp_path / "x.xyz").write_bytes(b"x")
        read_image(tmp_path / "x.xyz")


def test_points_round_trip(tmp_path):
    yx = np.array([[1.5, 2.0], [10.0, 20.25]])
    path = write_points(tmp_path / "p.csv", yx, {"score": [0.9, 0.1]})
    assert path.read_text().splitlines()[0] == "y,x,score"
    back, columns = read_points(path)
    assert np.allclose(back, yx) and np.allclose(columns["score"], [0.9, 0.1])
    empty = write_points(tmp_path / "e.csv", np.zeros((0, 2)))
    back, _ = read_points(empty)
    assert back.shape == (0, 2)


def test_points_errors(tmp_path):
    (tmp_path / "h.csv").write_text("row,col\n1,2\n")
    with pytest.raises(UserError, match="header"):
        read_points(tmp_path / "h.csv")
    (tmp_path / "n.csv").write_text("y,x\n1,abc\n")
    with pytest.raises(UserError, match="non-numeric"):
        read_points(tmp_path / "n.csv")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_percentile_normalize_any_dtype():
    image = np.linspace(0, 1000, 1001).astype(np.uint16)
    out = percentile_normalize(image, 0, 100)
    assert out.dtype == np.float32 and out.min() == 0 and out.max() == pytest.approx(1)


def test_to_channels_first():
    assert to_channels_first(np.zeros((30, 40, 3))).shape == (3, 30, 40)
    assert to_channels_first(np.zeros((30, 40))).shape == (1, 30, 40)
    assert to_channels_first(np.zeros((18, 30, 40))).shape == (18, 30, 40)


def test_tiled_apply_equals_whole_image():
    gen = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(4, 3, 5, 5, generator=gen), torch.randn(2, 4, 5, 5, generator=gen)

    def fn(x):  # receptive field radius 4 (two 5x5 convs): below the overlap of 8
        return F.conv2d(torch.tanh(F.conv2d(x, w1, padding=2)), w2, padding=2)

    x = torch.randn(1, 3, 150, 97)
    whole = fn(x)
    tiled = tiled_apply(fn, x, tile=64, overlap=8)
    assert tiled.shape == whole.shape
    assert tiled.shape == (1, 2, 150, 97)
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_atomic_outputs_have_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = write_points(tmp_path / "p.csv", np.zeros((1, 2)))
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_channel_stacks_stay_channel_stacks(tmp_path):
    import tifffile

    stack = np.random.default_rng(0).random((3, 10, 12)).astype(np.float32)
    write_image(tmp_path / "s.tif", stack)
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
    assert np.array_equal(read_image(tmp_path / "s.tif"), stack)
