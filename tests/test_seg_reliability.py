"""seg on files as microscopes write them: blank images, hot pixels, bit depths, layouts,
object size (--diameter), reproducibility, empty masks in evaluate."""

import json

import numpy as np
import pytest
import tifffile

from proxscope.checkpoint import DIAMETER_KEY, read_checkpoint
from proxscope.cli import main
from proxscope.data.transforms import prepare_image
from proxscope.models import WEIGHTS_DIR
from proxscope.sim.segmentation import simulate_wbc
from proxscope.tasks.seg.predict import load_model, segment


def _labels(model, image, **kwargs):
    return segment(model, prepare_image(image), tv_iters=20, **kwargs).argmax(0)


@pytest.fixture(scope="module")
def nets():
    return {name: load_model(name, "cpu") for name in ("unet", "runet")}


@pytest.fixture(scope="module")
def phantom():
    image, mask = simulate_wbc(128, np.random.default_rng(5))
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mask


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_blank_image_has_no_foreground_and_no_edge_band(nets, dtype):
    """The issue: on an all-zero 128x128 RGB image the bundled nets labelled 3.1 % of the
    pixels (columns 122-127) as nucleus; the convolutions' zero padding did it."""
    for name, net in nets.items():
        for value in (0, 200):
            labels = _labels(net, np.full((128, 128, 3), value, dtype))
            assert (labels > 0).sum() == 0, (name, value)


def test_bit_depths_and_float_give_the_same_masks(nets, phantom):
    image, _ = phantom
    runet = nets["runet"]
    ref = _labels(runet, image)
    for other in (image.astype(np.uint16) * 257, image.astype(np.uint16) * 16,  # 16, 12 bit
                  image.astype(np.float32) / 255):
        assert (_labels(runet, other) != ref).mean() < 1e-3


def test_a_hot_pixel_does_not_change_the_mask(nets, phantom):
    image, mask = phantom
    hot = image.astype(np.uint16) * 16
    hot[10, 10] = 65535
    runet = nets["runet"]
    clean, with_hot = _labels(runet, image), _labels(runet, hot)
    assert (clean == mask).mean() > 0.95
    assert (with_hot != clean).sum() <= 25  # at most the hot pixel's neighbourhood


def test_same_input_same_output_bit_identical(nets, phantom, tmp_path):
    image, _ = phantom
    a = segment(nets["runet"], prepare_image(image))
    b = segment(nets["runet"], prepare_image(image.copy()))
    assert np.array_equal(a, b)
    path = tmp_path / "im.tif"
    tifffile.imwrite(path, image)
    for run in ("1", "2"):
        assert main(["seg", "predict", str(path), "--out", str(tmp_path / f"m{run}.tif"),
                     "--probs", "--quiet"]) == 0
    for suffix in (".tif", ".probs.tif"):
        assert (tmp_path / f"m1{suffix}").read_bytes() == (tmp_path / f"m2{suffix}").read_bytes()


def test_diameter_resamples_to_the_trained_object_size(nets, tmp_path):
    """A phantom drawn at twice the size (white cell about 118 px): with --diameter the net sees
    it at its training size and the mask comes back at the image's size."""
    image, mask = simulate_wbc(256, np.random.default_rng(6))
    image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    trained = read_checkpoint(WEIGHTS_DIR / "runet.safetensors").extra[DIAMETER_KEY]
    assert 50 < trained < 70
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, image)
    out = tmp_path / "mask.tif"
    assert main(["seg", "predict", str(path), "--diameter", str(2 * trained), "--out", str(out),
                 "--quiet"]) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (256, 256)
    agree = {c: ((labels == c) & (mask == c)).sum() / ((labels == c) | (mask == c)).sum()
             for c in (1, 2)}
    assert min(agree.values()) > 0.8, agree


def test_layouts_and_stacks_are_checked(tmp_path, capsys):
    rng = np.random.default_rng(0)
    cases = {
        "zstack.tif": (rng.random((4, 64, 64)).astype(np.float32),
                       "expected an RGB (H, W, 3) image, got shape (4, 64, 64) (a stack of 4 planes"),
        "two.tif": (rng.random((64, 64, 2)).astype(np.float32), "got shape (64, 64, 2)"),
    }
    for name, (array, message) in cases.items():
        tifffile.imwrite(tmp_path / name, array, photometric="minisblack")
        assert main(["seg", "predict", str(tmp_path / name), "--out", str(tmp_path / "m.tif"),
                     "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    # colour first (3, H, W) is the same image as colour last
    rgb = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    net = load_model("runet", "cpu")
    assert np.array_equal(_labels(net, rgb), _labels(net, np.moveaxis(rgb, -1, 0)))


def test_unknown_model_lists_this_tasks_models_only(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16, 3), np.uint8))
    assert main(["seg", "predict", str(tmp_path / "a.tif"), "--model", "spotnet",
                 "--out", str(tmp_path / "m.tif")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'spotnet' for seg" in err and "not one of unet, runet" in err
    assert "cnncs" not in err and "retina" not in err


def test_evaluate_empty_prediction_and_empty_truth(tmp_path, capsys):
    truth = np.zeros((20, 20), np.uint8)
    truth[5:10, 5:10] = 2
    empty = np.zeros((20, 20), np.uint8)
    for name, array in (("truth", truth), ("empty", empty)):
        tifffile.imwrite(tmp_path / f"{name}.tif", array)

    def evaluate(pred, true):
        assert main(["seg", "evaluate", "--pred", str(tmp_path / f"{pred}.tif"),
                     "--truth", str(tmp_path / f"{true}.tif")]) == 0
        return json.loads(capsys.readouterr().out)  # strict JSON: no NaN / Infinity

    nothing_found = evaluate("empty", "truth")
    assert nothing_found["accuracy"] == pytest.approx(375 / 400)
    assert nothing_found["iou"] == [pytest.approx(375 / 400), None, 0.0]
    assert nothing_found["miou"] == pytest.approx((375 / 400 + 0.0) / 2)
    nothing_there = evaluate("truth", "empty")
    assert nothing_there["iou"] == [pytest.approx(375 / 400), None, 0.0]
    both = evaluate("empty", "empty")
    assert (both["accuracy"], both["miou"], both["iou"]) == (1.0, 1.0, [1.0])
