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
    assert path.read_text().splitlines()[:2] == ["index,axis-0,axis-1,score", "0,1.5,2,0.9"]
    back, columns = read_points(path)
    assert np.allclose(back, yx) and np.allclose(columns["score"], [0.9, 0.1])
    empty = write_points(tmp_path / "e.csv", np.zeros((0, 2)))
    back, _ = read_points(empty)
    assert back.shape == (0, 2)


def _napari_points_reader(path):
    """napari's built-in points CSV reader (napari_builtins.io), reduced to what decides whether
    a file opens as a points layer: the 'axis-*' columns are the coordinates, a first column
    'index' is dropped, the rest are properties."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    names, table = rows[0], np.array(rows[1:], dtype=object).reshape(len(rows) - 1, len(rows[0]))
    axes = [i for i, n in enumerate(names) if n.startswith("axis-")]
    assert axes, "napari would not recognise this CSV as points"
    props = {n: table[:, i].astype(float) for i, n in enumerate(names)
             if i not in axes and (i != 0 or n != "index")}
    return table[:, axes].astype(float), props


@pytest.mark.parametrize("text,yx,columns", [
    # napari: File > Save Selected Layer(s) of a points layer (axis-0 = row)
    ("index,axis-0,axis-1\n0,12.5,30.0\n1,40.0,7.25\n", [[12.5, 30.0], [40.0, 7.25]], {}),
    # Fiji/ImageJ Results table of a multi-point selection (X = column), with its row numbers
    (" ,X,Y,Label\n1,30,12.5,img.tif\n2,7.25,40,img.tif\n", [[12.5, 30.0], [40.0, 7.25]], {}),
    # the same saved from Fiji as tab-separated text
    ("X\tY\tMean\n30\t12.5\t100\n7.25\t40\t90\n", [[12.5, 30.0], [40.0, 7.25]],
     {"Mean": [100.0, 90.0]}),
    ("y,x,score\n12.5,30,0.9\n40,7.25,0.1\n", [[12.5, 30.0], [40.0, 7.25]], {"score": [0.9, 0.1]}),
    ("index,axis-0,axis-1\n", np.zeros((0, 2)), {}),  # napari, no points
])
def test_read_points_from_napari_fiji_and_proxscope(tmp_path, text, yx, columns):
    (tmp_path / "p.csv").write_text(text)
    back, extra = read_points(tmp_path / "p.csv")
    assert back.shape == np.shape(yx) and np.allclose(back, yx)
    assert extra.keys() == columns.keys()
    assert all(np.allclose(extra[k], v) for k, v in columns.items())


def test_written_points_open_in_napari_as_yx(tmp_path):
    yx = np.array([[3.0, 50.0], [20.5, 1.0]])
    path = write_points(tmp_path / "p.csv", yx, {"score": [0.5, 0.25]})
    data, props = _napari_points_reader(path)
    assert np.array_equal(data, yx)  # napari's axis-0 is the row (y)
    assert list(props) == ["score"] and np.allclose(props["score"], [0.5, 0.25])


def test_points_errors(tmp_path):
    (tmp_path / "h.csv").write_text("row,col\n1,2\n")
    with pytest.raises(UserError, match="header"):
        read_points(tmp_path / "h.csv")
    (tmp_path / "n.csv").write_text("y,x\n1,abc\n")
    with pytest.raises(UserError, match="non-numeric"):
        read_points(tmp_path / "n.csv")
    (tmp_path / "z.csv").write_text("index,axis-0,axis-1,axis-2\n0,1,2,3\n")
    with pytest.raises(UserError, match="expected 2-D points"):
        read_points(tmp_path / "z.csv")


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


def test_tiles_start_on_the_pooling_grid():
    """A map that pools by 4 depends on where its 4x4 grid lies: aligned tiles equal one pass
    on sizes that are multiples of neither the tile nor 4 (unaligned tiles do not)."""

    def pooled(x):
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        y = F.max_pool2d(F.pad(x, (0, pw, 0, ph), mode="replicate"), 4)
        return F.interpolate(y, scale_factor=4, mode="nearest")[..., :h, :w]

    x = torch.randn(1, 2, 101, 67, generator=torch.Generator().manual_seed(1))
    whole = pooled(x)
    assert torch.equal(tiled_apply(pooled, x, tile=40, overlap=8, align=4), whole)
    assert not torch.equal(tiled_apply(pooled, x, tile=40, overlap=8), whole)


def test_a_folder_given_as_a_file_says_so(tmp_path):
    with pytest.raises(UserError, match="is a folder, not an image file"):
        read_image(tmp_path)
    with pytest.raises(UserError, match="is a folder, not a points CSV"):
        read_points(tmp_path)
