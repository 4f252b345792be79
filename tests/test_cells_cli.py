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
    iio.imwrite(rgb, np.zeros((40, 40, 3), np.uint8) + 30)
    predict = ["cells", "predict"]
    cases = [
        ([*predict, str(tmp_path / "missing.tif"), "--model", str(checkpoint)], "image not found"),
        ([*predict, str(image), "--model", "no-such-model"], "unknown model 'no-such-model'"),
        ([*predict, str(image), "--model", str(bad_ckpt)], "not a readable proxscope checkpoint"),
        ([*predict, str(nan_tif), "--model", str(checkpoint)], "NaN"),
        ([*predict, str(rgb), "--model", str(checkpoint)], "expected 1 (grey) channel(s)"),
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
