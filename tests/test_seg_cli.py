"""seg CLI round trips on tiny images, training pieces and user errors (exit 2, no output)."""

import json

import numpy as np
import pytest
import tifffile
import torch

from proxscope.checkpoint import read_checkpoint
from proxscope.cli import main
from proxscope.models.segmentation import build
from proxscope.tasks.seg.predict import segment
from proxscope.tasks.seg.train import add_training_noise, crop_sampler, nll_loss

TINY = ["--steps", "2", "--batch-size", "2", "--patch", "32", "--base-channels", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    assert main(["seg", "simulate", "--n-images", "5", "--size", "40", "--seed", "1",
                 "--out", str(root / "sim"), "--quiet"]) == 0
    ckpt = root / "unet.safetensors"
    assert main(["seg", "train", "--images", str(root / "sim/images"), "--masks",
                 str(root / "sim/masks"), "--model", "unet", "--out", str(ckpt), "--quiet",
                 *TINY]) == 0
    return root, ckpt


def test_simulate_writes_pairs(data):
    root, _ = data
    image = tifffile.imread(root / "sim/images/sim_000.tif")
    mask = tifffile.imread(root / "sim/masks/sim_000.tif")
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8
    assert mask.shape == (40, 40) and mask.dtype == np.uint8 and mask.max() == 2
    assert len(list((root / "sim/images").iterdir())) == 5


def test_train_checkpoint_metadata_and_resume(data, tmp_path):
    root, ckpt = data
    meta = read_checkpoint(ckpt)
    assert meta.extra["n_classes"] == 3 and meta.extra["arch"] == "unet"
    assert meta.extra["val_images"] == 1 and meta.extra["train_images"] == 4
    args = ["seg", "train", "--images", str(root / "sim/images"), "--masks",
            str(root / "sim/masks"), "--model", "rsegnet", "--quiet", "--val-fraction", "0",
            "--batch-size", "2", "--patch", "32", "--base-channels", "4"]
    full, part = tmp_path / "full.safetensors", tmp_path / "part.safetensors"
    assert main([*args, "--out", str(full), "--steps", "4"]) == 0
    assert main([*args, "--out", str(part), "--steps", "2"]) == 0
    assert main([*args, "--out", str(part), "--steps", "4", "--resume"]) == 0
    a, b = read_checkpoint(full).model_state(), read_checkpoint(part).model_state()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_predict_png_and_evaluate_round_trip(data, tmp_path):
    import imageio.v3 as iio

    root, ckpt = data
    png = tmp_path / "cell.png"
    iio.imwrite(png, tifffile.imread(root / "sim/images/sim_001.tif"))
    out, overlay, probs = tmp_path / "mask.tif", tmp_path / "overlay.png", tmp_path / "p.tif"
    assert main(["seg", "predict", str(png), "--model", str(ckpt), "--out", str(out),
                 "--overlay", str(overlay), "--probs", str(probs), "--quiet"]) == 0
    mask = tifffile.imread(out)
    assert mask.shape == (40, 40) and mask.dtype == np.uint8 and mask.max() <= 2
    p = tifffile.imread(probs)
    assert p.shape == (3, 40, 40) and np.allclose(p.sum(0), 1, atol=1e-4)
    assert np.array_equal(p.argmax(0), mask)
    assert iio.imread(overlay).shape == (40, 40, 3)
    report_path = tmp_path / "report.json"
    truth = root / "sim/masks/sim_001.tif"
    assert main(["seg", "evaluate", "--pred", str(out), "--truth", str(truth), "--out",
                 str(report_path), "--quiet"]) == 0
    report = json.loads(report_path.read_text())
    t = tifffile.imread(truth)
    assert report["accuracy"] == pytest.approx(float((mask == t).mean()))
    # Folders: a perfect prediction.
    assert main(["seg", "evaluate", "--pred", str(root / "sim/masks"), "--truth",
                 str(root / "sim/masks"), "--out", str(report_path), "--quiet"]) == 0
    report = json.loads(report_path.read_text())
    assert report["miou"] == 1.0 and report["n_images"] == 5 and report["re"] == report["re_truth"]


def test_user_errors_exit_2_without_output(data, tmp_path):
    root, ckpt = data
    out = tmp_path / "mask.tif"
    gray = tmp_path / "gray.tif"
    tifffile.imwrite(gray, np.random.default_rng(0).random((40, 40)).astype(np.float32))
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((40, 40), np.nan, np.float32))
    bad_ckpt = tmp_path / "bad.safetensors"
    bad_ckpt.write_bytes(b"not a checkpoint")
    image = str(root / "sim/images/sim_000.tif")
    cases = [
        ["seg", "predict", str(tmp_path / "missing.tif"), "--model", str(ckpt)],
        ["seg", "predict", str(gray), "--model", str(ckpt)],  # grayscale into an RGB model
        ["seg", "predict", str(nan), "--model", str(ckpt)],
        ["seg", "predict", image, "--model", "no-such-model"],
        ["seg", "predict", image, "--model", str(bad_ckpt)],
        ["seg", "predict", image, "--model", str(ckpt), "--tv-iters", "-1"],
    ]
    for args in cases:
        assert main([*args, "--out", str(out), "--quiet"]) == 2, args
        assert not out.exists()
    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, np.zeros((10, 10), np.uint8))
    assert main(["seg", "evaluate", "--pred", str(wrong), "--truth",
                 str(root / "sim/masks/sim_000.tif"), "--out", str(out)]) == 2
    assert main(["seg", "train", "--images", str(tmp_path), "--masks", str(tmp_path),
                 "--out", str(out), "--quiet"]) == 2
    assert main(["seg", "train", "--images", str(root / "sim/images"), "--masks",
                 str(root / "sim/masks"), "--out", str(out), "--resume", "--quiet"]) == 2
    assert not out.exists()


def test_training_pieces():
    probs = torch.tensor([[[[0.5]], [[0.25]], [[0.25]]]])
    assert float(nll_loss(probs, torch.tensor([[[1]]]))) == pytest.approx(np.log(4))
    assert float(nll_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long))) \
        == pytest.approx(-np.log(1e-8))
    rng = np.random.default_rng(1)
    images = [(rng.random((3, 20, 30)) + i).astype(np.float32) for i in range(6)]
    masks = [np.full((20, 30), i % 3) for i in range(6)]
    x, y = crop_sampler(images, masks, 64, 4)(np.random.default_rng(0))
    assert x.shape == (4, 3, 20, 20) and y.shape == (4, 20, 20)
    assert all(int(x[b].min()) % 3 == int(y[b, 0, 0]) for b in range(4))  # pairs stay aligned
    noisy = add_training_noise(images, 1 / 3, seed=0)
    assert sum(not np.array_equal(a, b) for a, b in zip(images, noisy, strict=True)) == 2


def test_segment_tiles_large_images():
    torch.manual_seed(0)
    model = build("unet", base_channels=4, depth=2).eval()
    image = np.random.default_rng(0).random((3, 70, 90)).astype(np.float32)
    whole = segment(model, image, tile=512)
    tiled = segment(model, image, tile=48, overlap=16)
    assert tiled.shape == whole.shape == (3, 70, 90)
    assert np.abs(tiled - whole).mean() < 0.02


@pytest.mark.parametrize("name", ["unet", "runet"])
def test_bundled_weights_predict(name, data, tmp_path):
    from proxscope.tasks.seg.predict import load_model

    model = load_model(name, "cpu")
    assert (model.config.in_channels, model.config.n_classes) == (3, 3)
    assert (model.tv is not None) == (name == "runet")
    root, _ = data
    out = tmp_path / "mask.png"
    assert main(["seg", "predict", str(root / "sim/images/sim_002.tif"), "--model", name,
                 "--out", str(out), "--tv-iters", "10", "--quiet"]) == 0
    import imageio.v3 as iio

    assert iio.imread(out).shape == (40, 40)
