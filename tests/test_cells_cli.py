"""cells CLI round trips on tiny inputs, and user mistakes -> exit 2 without output files."""

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
                 "--out", str(root / "data")]) == 0
    return root


@pytest.fixture(scope="module")
def checkpoint(dataset):
    ckpt = dataset / "model.safetensors"
    data = dataset / "data"
    args = ["cells", "train", "--images", str(data / "images"), "--points", str(data / "points"),
            "--out", str(ckpt), "--patch", "32", "--batch", "4", "--quiet"]
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2", "--resume"]) == 0
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
    assert ckpt.extra["steps"] == ckpt.extra["history"][-1]["step"]
    assert ckpt.config["patch"] == 32
    # an ordinary 8-bit PNG written by another tool, 50x70 (smaller than two patches)
    image = (tifffile.imread(dataset / "data" / "images" / "cells_0000.tif")[:50, :70] // 256)
    png = tmp_path / "plain.png"
    iio.imwrite(png, image.astype(np.uint8))
    out = tmp_path / "pred.csv"
    assert main(["cells", "predict", str(png), "--model", str(checkpoint), "--out", str(out)]) == 0
    points, columns = read_points(out)
    assert "score" in columns and len(columns["score"]) == len(points)
    assert np.all((points >= 0) & (points < [50, 70]))
    metrics = tmp_path / "m.json"
    assert main(["cells", "evaluate", "--pred", str(out), "--truth",
                 str(dataset / "data" / "points" / "cells_0000.csv"), "--out", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    assert set(result) >= {"precision", "recall", "f1", "tp", "fp", "fn"}


def test_evaluate_hand_made(tmp_path):
    write_points(tmp_path / "truth.csv", np.array([[10, 10], [20, 20], [40, 40]]))
    write_points(tmp_path / "pred.csv", np.array([[11, 10], [20, 23], [30, 30], [10.5, 10]]))
    out = tmp_path / "m.json"
    assert main(["cells", "evaluate", "--pred", str(tmp_path / "pred.csv"), "--truth",
                 str(tmp_path / "truth.csv"), "--radius", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["tp"], result["fp"], result["fn"]) == (2, 2, 1)
    assert result["f1"] == pytest.approx(4 / 7)


def test_user_mistakes_exit_2_without_output(dataset, checkpoint, tmp_path):
    out = tmp_path / "pred.csv"
    image = dataset / "data" / "images" / "cells_0000.tif"
    cases = [
        ["cells", "predict", str(tmp_path / "missing.tif"), "--model", str(checkpoint)],
        ["cells", "predict", str(image), "--model", "no-such-model"],
    ]
    bad_ckpt = tmp_path / "bad.safetensors"
    bad_ckpt.write_bytes(b"not a checkpoint")
    cases.append(["cells", "predict", str(image), "--model", str(bad_ckpt)])
    nan_tif = tmp_path / "nan.tif"
    tifffile.imwrite(nan_tif, np.full((40, 40), np.nan, np.float32))
    cases.append(["cells", "predict", str(nan_tif), "--model", str(checkpoint)])
    rgb = tmp_path / "rgb.png"
    iio.imwrite(rgb, np.zeros((40, 40, 3), np.uint8) + 30)
    cases.append(["cells", "predict", str(rgb), "--model", str(checkpoint)])
    for args in cases:
        assert main([*args, "--out", str(out)]) == 2, args
        assert not out.exists()
    ckpt = tmp_path / "m.safetensors"
    no_points = tmp_path / "nopoints"
    no_points.mkdir()
    assert main(["cells", "train", "--images", str(image.parent), "--points", str(no_points),
                 "--out", str(ckpt), "--quiet"]) == 2
    assert main(["cells", "train", "--images", str(image.parent), "--points",
                 str(dataset / "data" / "points"), "--out", str(ckpt), "--patch", "30"]) == 2
    assert not ckpt.exists()
    assert main(["cells", "evaluate", "--pred", str(tmp_path), "--truth",
                 str(dataset / "data" / "points" / "cells_0000.csv")]) == 2
