"""seg CLI round trips on tiny images (one file and folders), training pieces and user errors
(one line, exit 2, no output)."""

import csv
import json

import numpy as np
import pytest
import tifffile
import torch

from proxscope.checkpoint import read_checkpoint
from proxscope.cli import main
from proxscope.metrics.segmentation import confusion_matrix, segmentation_report
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
    out = tmp_path / "mask.tif"
    assert main(["seg", "predict", str(png), "--model", str(ckpt), "--out", str(out),
                 "--overlay", "--probs", "--quiet"]) == 0
    mask = tifffile.imread(out)
    assert mask.shape == (40, 40) and mask.dtype == np.uint8 and mask.max() <= 2
    p = tifffile.imread(tmp_path / "mask.probs.tif")
    assert p.shape == (3, 40, 40) and np.allclose(p.sum(0), 1, atol=1e-4)
    assert np.array_equal(p.argmax(0), mask)
    assert iio.imread(tmp_path / "mask.overlay.png").shape == (40, 40, 3)
    report_path = tmp_path / "report.json"
    truth = root / "sim/masks/sim_001.tif"
    assert main(["seg", "evaluate", "--pred", str(out), "--truth", str(truth), "--out",
                 str(report_path), "--quiet"]) == 0
    report = json.loads(report_path.read_text())
    t = tifffile.imread(truth)
    assert report["accuracy"] == pytest.approx(float((mask == t).mean()))
    assert np.array_equal(report["confusion"], confusion_matrix(mask, t))


def test_predict_and_evaluate_folders(data, tmp_path):
    root, ckpt = data
    out = tmp_path / "pred"
    assert main(["seg", "predict", str(root / "sim/images"), "--model", str(ckpt), "--out", str(out),
                 "--probs", "--tv-iters", "5", "--quiet"]) == 0
    names = [f"sim_{i:03d}" for i in range(5)]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.csv"] + [f"{n}.tif" for n in names] + [f"{n}.probs.tif" for n in names])
    rows = list(csv.DictReader((out / "summary.csv").open()))
    preds = [tifffile.imread(out / f"{n}.tif") for n in names]
    assert [r["image"] for r in rows] == [f"{n}.tif" for n in names]
    assert float(rows[0]["fraction_class_0"]) == pytest.approx(float((preds[0] == 0).mean()), abs=1e-4)
    report_path = tmp_path / "scores.json"
    assert main(["seg", "evaluate", "--pred", str(out), "--truth", str(root / "sim/masks"),
                 "--out", str(report_path), "--quiet"]) == 0
    report = json.loads(report_path.read_text())
    truths = [tifffile.imread(root / "sim/masks" / f"{n}.tif") for n in names]
    expected = segmentation_report(preds, truths)  # pooled over all pixels, as the old folder report
    pooled = report["pooled"]
    assert report["images"] == 5 and sorted(report["per_image"]) == names
    for key in ("accuracy", "miou", "re", "re_truth"):
        assert pooled[key] == pytest.approx(expected[key]), key
    assert pooled["n_pixels"] == 5 * 40 * 40 and pooled["iou"] == pytest.approx(expected["iou"])
    # A perfect prediction.
    assert main(["seg", "evaluate", "--pred", str(root / "sim/masks"), "--truth",
                 str(root / "sim/masks"), "--out", str(report_path), "--quiet"]) == 0
    pooled = json.loads(report_path.read_text())["pooled"]
    assert pooled["miou"] == 1.0 and pooled["n_images"] == 5 and pooled["re"] == pooled["re_truth"]


def test_user_errors_are_one_line_exit_2_without_output(data, tmp_path, capsys):
    root, ckpt = data
    out = tmp_path / "mask.tif"
    gray = tmp_path / "gray.tif"
    tifffile.imwrite(gray, np.random.default_rng(0).random((40, 40)).astype(np.float32))
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((40, 40), np.nan, np.float32))
    bad_ckpt = tmp_path / "bad.safetensors"
    bad_ckpt.write_bytes(b"not a checkpoint")
    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, np.zeros((10, 10), np.uint8))
    image, masks = str(root / "sim/images/sim_000.tif"), str(root / "sim/masks")
    empty = tmp_path / "empty"
    empty.mkdir()
    predict = ["seg", "predict", "--out", str(out), "--quiet"]
    train = ["seg", "train", "--out", str(out), "--quiet"]
    cases = [
        ([*predict, str(tmp_path / "missing.tif"), "--model", str(ckpt)], "image not found"),
        ([*predict, str(gray), "--model", str(ckpt)],
         "gray.tif: expected an RGB (H, W, 3) image, got shape (40, 40)"),
        ([*predict, str(nan), "--model", str(ckpt)], "nan.tif: image contains NaN or Inf"),
        ([*predict, image, "--model", "no-such-model"], "no-such-model"),
        ([*predict, image, "--model", str(bad_ckpt)], "bad.safetensors"),
        ([*predict, image, "--model", str(ckpt), "--tv-iters", "-1"], "'--tv-iters': -1 is not in"),
        ([*predict, image, "--model", "runet", "--post-tv-lam", "0.5"], "this model has a TV softmax"),
        (["seg", "predict", image, "--out", str(tmp_path / "mask.jpg"), "--quiet"],
         "output must end with .tif or .tiff or .png"),
        (["seg", "evaluate", "--pred", str(wrong), "--truth", f"{masks}/sim_000.tif", "--out", str(out)],
         "shape (10, 10) differs from ground truth"),
        ([*train, "--images", str(empty), "--masks", str(empty)], "holds no images"),
        ([*train, "--images", str(root / "sim/images"), "--masks", str(tmp_path / "none")],
         "--masks: folder not found"),
        ([*train, "--images", str(root / "sim/images"), "--masks", str(tmp_path)], "no mask"),
        ([*train, "--images", str(root / "sim/images"), "--masks", masks, "--resume"], "no resume file"),
        ([*train, "--images", str(root / "sim/images"), "--masks", masks, "--noisy-train", "2"],
         "'--noisy-train': 2.0 is not in the range"),
        (["seg", "simulate", "--out", str(tmp_path / "sim"), "--size", "16"], "'--size': 16 is not in"),
    ]
    capsys.readouterr()
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1 and message in err, (args, err)
        assert not out.exists() and not (tmp_path / "mask.jpg").exists()
    assert not (tmp_path / "sim").exists()


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


@pytest.mark.parametrize("arch,depth,shape,tile", [
    ("unet", 2, (70, 90), 56),  # receptive radius 22 -> overlap 24, tiles on the 4-px grid
    ("rsegnet", 3, (101, 67), 72),  # radius 30 -> overlap 32
    ("runet", 3, (103, 121), 104),  # radius 46 -> overlap 48: the smallest tile with a stride
])
def test_tiled_prediction_equals_one_pass_off_the_grid(arch, depth, shape, tile):
    """Sizes that are multiples of neither the tile nor 2^depth: the last tile still starts on
    the pooling grid, so tiles give the logits of one pass (the issue: 2.68 apart before)."""
    torch.manual_seed(0)
    model = build(arch, base_channels=4, depth=depth).eval()
    image = np.random.default_rng(0).random((3, *shape)).astype(np.float32)
    whole = segment(model, image, tile=512)
    tiled = segment(model, image, tile=tile)
    assert tiled.shape == whole.shape == (3, *shape)
    assert np.abs(tiled - whole).max() < 1e-5


def test_receptive_radius_is_what_the_gradients_show():
    for arch, depth in (("unet", 2), ("unet", 3), ("segnet", 3)):
        torch.manual_seed(0)
        model = build(arch, depth=depth).eval()
        x = torch.randn(1, 3, 128, 128, requires_grad=True)
        model.logits(x)[0, :, 64, 64].sum().backward()
        rows = torch.nonzero(x.grad[0].abs().sum((0, 2)) > 0)[:, 0] - 64
        assert max(-int(rows.min()), int(rows.max())) == model.receptive_radius, (arch, depth)


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
