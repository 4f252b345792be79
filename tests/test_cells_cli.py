"""cells CLI round trips on tiny inputs (one image and folders), and user mistakes -> one line,
exit 2, no output files."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from proxscope.cli import main
from proxscope.data.io import read_points, write_points


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    assert main(["cells", "simulate", "--n-images", "2", "--size", "64", "--seed", "1",
                 "--out", str(root / "data"), "--quiet"]) == 0
    return root


@pytest.fixture(scope="module")
def checkpoint(dataset):
    ckpt = dataset / "model.safetensors"
    data = dataset / "data"
    args = ["cells", "train", "--images", str(data / "images"), "--points", str(data / "points"),
            "--out", str(ckpt), "--patch", "32", "--batch-size", "4", "--model", "ecnncs2",
            "--quiet"]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "4", "--resume"]) == 0
    return ckpt


def test_simulate_writes_pairs(dataset):
    images = sorted((dataset / "data" / "images").glob("*.tif"))
    assert len(images) == 2
    for path in images:
        image = tifffile.imread(path)
        assert image.shape == (64, 64) and image.dtype == np.uint16
        points, _ = read_points(dataset / "data" / "points" / f"{path.stem}.csv")
        assert np.all((points >= 0) & (points < 64))


def test_train_predict_evaluate_round_trip(dataset, checkpoint, tmp_path):
    from proxscope.checkpoint import read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    assert ckpt.extra["steps"] == ckpt.extra["history"][-1]["step"] == 4
    assert ckpt.config["patch"] == 32 and ckpt.model_class.endswith(":ECNNCS2")
    assert ckpt.extra["detection"]["vote_threshold"] in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    # an ordinary 8-bit PNG written by another tool, 50x70 (smaller than two patches)
    image = (tifffile.imread(dataset / "data" / "images" / "cells_0000.tif")[:50, :70] // 256)
    png = tmp_path / "plain.png"
    iio.imwrite(png, image.astype(np.uint8))
    out = tmp_path / "pred.csv"
    assert main(["cells", "predict", str(png), "--model", str(checkpoint), "--out", str(out),
                 "--quiet"]) == 0
    points, columns = read_points(out)
    assert "score" in columns and len(columns["score"]) == len(points)
    assert np.all((points >= 0) & (points < [50, 70]))
    metrics = tmp_path / "m.json"
    assert main(["cells", "evaluate", "--pred", str(out), "--truth",
                 str(dataset / "data" / "points" / "cells_0000.csv"), "--out", str(metrics),
                 "--quiet"]) == 0
    result = json.loads(metrics.read_text())
    assert result["tp"] + result["fp"] == len(points) and result["radius"] == 4.0


def test_folder_predict_and_evaluate_with_the_bundled_model(dataset, tmp_path):
    data = dataset / "data"
    pred = tmp_path / "pred"
    assert main(["cells", "predict", str(data / "images"), "--out", str(pred), "--quiet"]) == 0
    summary = (pred / "summary.csv").read_text().splitlines()
    assert summary[0] == "image,cells" and len(summary) == 3
    counts = [len(read_points(pred / f"cells_000{i}.csv")[0]) for i in range(2)]
    assert summary[1:] == [f"cells_000{i}.tif,{n}" for i, n in enumerate(counts)]
    out = tmp_path / "m.json"
    assert main(["cells", "evaluate", "--pred", str(pred), "--truth", str(data / "points"),
                 "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 2 and sorted(result["per_image"]) == ["cells_0000", "cells_0001"]
    pooled, per_image = result["pooled"], result["per_image"].values()
    for key in ("tp", "fp", "fn"):
        assert pooled[key] == sum(r[key] for r in per_image)
    assert pooled["tp"] + pooled["fp"] == sum(counts)
    assert pooled["f1"] == pytest.approx(2 * pooled["tp"] / (2 * pooled["tp"] + pooled["fp"] + pooled["fn"]))


def test_evaluate_hand_made(tmp_path):
    write_points(tmp_path / "truth.csv", np.array([[10, 10], [20, 20], [40, 40]]))
    write_points(tmp_path / "pred.csv", np.array([[11, 10], [20, 23], [30, 30], [10.5, 10]]))
    out = tmp_path / "m.json"
    assert main(["cells", "evaluate", "--pred", str(tmp_path / "pred.csv"), "--truth",
                 str(tmp_path / "truth.csv"), "--radius", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["tp"], result["fp"], result["fn"]) == (2, 2, 1)
    assert result["f1"] == pytest.approx(4 / 7)
    assert main(["cells", "evaluate", "--pred", str(tmp_path / "pred.csv"), "--truth",
                 str(tmp_path / "truth.csv"), "--radius", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["tp"] == 1


def test_user_mistakes_are_one_line_exit_2_without_output(dataset, checkpoint, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    image = dataset / "data" / "images" / "cells_0000.tif"
    bad_ckpt = tmp_path / "bad.safetensors"
    bad_ckpt.write_bytes(b"not a checkpoint")
    nan_tif = tmp_path / "nan.tif"
    tifffile.imwrite(nan_tif, np.full((40, 40), np.nan, np.float32))
    rgb = tmp_path / "rgb.png"
    iio.imwrite(rgb, np.zeros((40, 40, 3), np.uint8) + np.array([30, 60, 90], np.uint8))
    predict = ["cells", "predict"]
    cases = [
        ([*predict, str(tmp_path / "missing.tif"), "--model", str(checkpoint)], "image not found"),
        ([*predict, str(image), "--model", "no-such-model"], "unknown model 'no-such-model'"),
        ([*predict, str(image), "--model", str(bad_ckpt)], "not a readable proxscope checkpoint"),
        ([*predict, str(nan_tif), "--model", str(checkpoint)], "NaN"),
        ([*predict, str(rgb), "--model", str(checkpoint)], "expected a grey (H, W) image"),
    ]
    for args, message in cases:
        assert main([*args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
        assert not out.exists()
    ckpt = tmp_path / "m.safetensors"
    no_points = tmp_path / "nopoints"
    no_points.mkdir()
    train = ["cells", "train", "--images", str(image.parent), "--out", str(ckpt)]
    cases = [
        ([*train, "--points", str(no_points)], "cells_0000.tif: no annotation"),
        ([*train, "--points", str(dataset / "data" / "points"), "--patch", "30"],
         "--patch must be a multiple of 8, got 30"),
        ([*train, "--points", str(no_points), "--val-images", str(image.parent)],
         "give both --val-images and --val-points, or neither"),
        ([*train, "--points", str(no_points), "--model", "lista"], "'lista' is not one of"),
        (["cells", "evaluate", "--pred", str(tmp_path), "--truth",
          str(dataset / "data" / "points" / "cells_0000.csv")], "expected a folder"),
        (["cells", "evaluate", "--pred", str(out), "--truth", str(out)], "no such file or folder"),
        (["cells", "evaluate", "--pred", str(image), "--truth", str(image), "--radius", "0"],
         "0.0 is not in the range x>0"),
    ]
    for args, message in cases:
        assert main([*args, "--quiet"]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not ckpt.exists()


def _write_pairs(root, data):
    from proxscope.sim.cells import to_uint16

    for i, (image, points) in enumerate(data):
        tifffile.imwrite(root / "images" / f"im{i}.tif", to_uint16(image))
        write_points(root / "points" / f"im{i}.csv", points)


def test_own_data_training_at_radius_12_finds_the_objects(tmp_path):
    # objects of radius 12 px (the bundled model's are 3.5-6): `cells train` estimates their
    # size from the annotations, trains at the model's scale and predicts at the image's scale
    from proxscope.checkpoint import read_checkpoint
    from proxscope.sim.cells import CellSimConfig, simulate

    config = CellSimConfig(scale=12 / 4.75, clutter_ratio=0.0)
    for part, seed in (("train", 1), ("test", 2)):
        (tmp_path / part / "images").mkdir(parents=True)
        (tmp_path / part / "points").mkdir()
        _write_pairs(tmp_path / part, simulate(2, 320, seed, config))
    ckpt = tmp_path / "r12.safetensors"
    assert main(["cells", "train", "--images", str(tmp_path / "train" / "images"), "--points",
                 str(tmp_path / "train" / "points"), "--patch", "32", "--steps", "200",
                 "--batch-size", "16", "--model", "cnncs", "--out", str(ckpt), "--quiet"]) == 0
    extra = read_checkpoint(ckpt).extra
    assert extra["data_diameter_px"] == pytest.approx(2.25 * 12, rel=0.2)
    pred = tmp_path / "pred"
    assert main(["cells", "predict", str(tmp_path / "test" / "images"), "--model", str(ckpt),
                 "--out", str(pred), "--quiet"]) == 0
    out = tmp_path / "m.json"
    assert main(["cells", "evaluate", "--pred", str(pred), "--truth",
                 str(tmp_path / "test" / "points"), "--radius", "12", "--out", str(out)]) == 0
    pooled = json.loads(out.read_text())["pooled"]
    assert pooled["tp"] + pooled["fn"] >= 10 and pooled["f1"] >= 0.8, pooled


def test_bundled_model_with_diameter_on_large_nuclei(tmp_path):
    # issue 18 item 9: nuclei of radius 12 px; --diameter resamples them to the model's size
    from proxscope.sim.cells import CellSimConfig, simulate, to_uint16

    image, truth = simulate(1, 480, 3, CellSimConfig(scale=12 / 4.75))[0]
    tifffile.imwrite(tmp_path / "big.tif", to_uint16(image))
    write_points(tmp_path / "truth.csv", truth)
    f1 = {}
    for name, extra in (("plain", []), ("diameter", ["--diameter", "26"])):
        pred = tmp_path / f"{name}.csv"
        assert main(["cells", "predict", str(tmp_path / "big.tif"), "--out", str(pred),
                     "--quiet", *extra]) == 0
        out = tmp_path / f"{name}.json"
        assert main(["cells", "evaluate", "--pred", str(pred), "--truth",
                     str(tmp_path / "truth.csv"), "--radius", "12", "--out", str(out)]) == 0
        f1[name] = json.loads(out.read_text())["f1"]
    assert len(truth) >= 15 and f1["diameter"] >= 0.8 and f1["diameter"] > f1["plain"] + 0.2, f1


def test_pixel_types_blank_and_hot_pixel_images(tmp_path):
    # issue 18 item 1: the same image as float, uint16 and float64 x 1000 gives the same cells;
    # a blank image none; one saturated pixel barely changes the result
    from proxscope.sim.cells import simulate, to_uint16
    from proxscope.tasks.cells.detect import detect, load_detector

    model, threshold, _ = load_detector("cnncs")
    image, truth = simulate(1, 256, 4)[0]
    hot = to_uint16(image)
    hot[10, 10] = 65535
    results = {}
    for name, variant in (("float32", image), ("uint16", to_uint16(image)),
                          ("float64", image.astype(np.float64) * 1000), ("hot", hot)):
        results[name] = match_f1(detect(model, variant, threshold)[0], truth)
    assert results["float32"] >= 0.8, results
    assert abs(results["uint16"] - results["float32"]) <= 0.02
    assert results["float64"] == pytest.approx(results["float32"], abs=1e-9)
    assert abs(results["hot"] - results["uint16"]) <= 0.02
    noise = np.random.default_rng(0).normal(1000, 10, (256, 256)).astype(np.uint16)  # empty well
    for blank in (np.zeros((128, 128), np.uint16), np.full((128, 128), 700.0, np.float32), noise):
        assert len(detect(model, blank, threshold)[0]) == 0


def match_f1(pred, truth):
    from proxscope.metrics import match_points

    return match_points(pred, truth, 4.0).f1


def test_evaluate_empty_prediction_and_empty_truth(tmp_path):
    write_points(tmp_path / "truth.csv", np.array([[10, 10], [20, 20]]))
    write_points(tmp_path / "none.csv", np.zeros((0, 2)))
    out = tmp_path / "m.json"
    assert main(["cells", "evaluate", "--pred", str(tmp_path / "none.csv"), "--truth",
                 str(tmp_path / "truth.csv"), "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert (result["tp"], result["fp"], result["fn"], result["f1"]) == (0, 0, 2, 0.0)
    assert main(["cells", "evaluate", "--pred", str(tmp_path / "truth.csv"), "--truth",
                 str(tmp_path / "none.csv"), "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())  # strict JSON (no Infinity)
    assert (result["tp"], result["fp"], result["fn"]) == (0, 2, 0)
