"""retina on photographs as cameras write them: layouts, bit depths, hot pixels, blank frames,
reproducibility, and evaluate on one-class labels."""

import json

import numpy as np
import pytest
import tifffile

from proxscope.cli import main
from proxscope.data.fundus import as_rgb_float
from proxscope.errors import UserError
from proxscope.sim.fundus import FundusConfig, simulate


@pytest.fixture(scope="module")
def photo():
    sample = simulate(FundusConfig(size=160), np.random.default_rng(3))
    return np.round(np.clip(sample.image, 0, 1) * 255).astype(np.uint8)


def test_layouts_bit_depths_and_hot_pixels_scale_alike(photo):
    ref = as_rgb_float(photo)
    assert ref.shape == photo.shape and ref.dtype == np.float32
    twelve = photo.astype(np.uint16) * 16
    hot = twelve.copy()
    hot[5, 5] = 65535  # one hot pixel in a 12-bit file must not make it a 16-bit one
    cases = {
        "channels first": np.moveaxis(photo, -1, 0),
        "RGBA": np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)]),
        "12-bit": twelve,
        "12-bit with a hot pixel": hot,
        "float 0-1": photo / np.float32(255),
        "float 0-255": photo.astype(np.float32),
    }
    for name, image in cases.items():
        got = as_rgb_float(image)
        tolerance = 1 / 255 if "12" in name else 1e-6  # 12 bit: x·16/4095 vs x/255
        outside = np.abs(got - ref) > tolerance
        assert outside.sum() <= (1 if "hot" in name else 0), name


@pytest.mark.parametrize("shape,message", [
    ((4, 64, 64), "got shape (4, 64, 64) (a stack of 4 planes"),
    ((64, 64, 2), "got shape (64, 64, 2)"),
    ((64, 64), "got shape (64, 64)"),
])
def test_non_rgb_photographs_are_named_with_their_shape(shape, message):
    with pytest.raises(UserError, match="expected an RGB") as info:
        as_rgb_float(np.zeros(shape, np.uint8))
    assert message in str(info.value)


def test_predict_twice_is_bit_identical_and_blank_is_one_line(photo, tmp_path, capsys):
    path = tmp_path / "eye.png"
    import imageio.v3 as iio

    iio.imwrite(path, photo)
    for run in ("a", "b"):
        assert main(["retina", "predict", str(path), "--out", str(tmp_path / run), "--quiet"]) == 0
    for name in ("score.json", "heatmap.tif"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    tifffile.imwrite(tmp_path / "blank.tif", np.zeros((64, 64, 3), np.uint16))
    assert main(["retina", "predict", str(tmp_path / "blank.tif"), "--out", str(tmp_path / "c"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "blank.tif: no field of view found" in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_evaluate_with_one_class_of_labels_writes_null_auc(photo, tmp_path, capsys):
    """Every photograph healthy: the ROC AUC is undefined -> null in strict JSON."""
    for name, p in (("a", 0.2), ("b", 0.7)):
        (tmp_path / "pred" / name).mkdir(parents=True)
        (tmp_path / "pred" / name / "score.json").write_text(
            json.dumps({"referable_probability": p, "image": name}))
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "labels.csv").write_text("image,referable\na.png,0\nb.png,0\n")
    assert main(["retina", "evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                 str(tmp_path / "truth")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 2 and result["auc"] is None and result["froc"] is None
