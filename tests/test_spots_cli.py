"""spots CLI round trips on tiny simulated images (one image, a folder of images), and user
mistakes -> a one-line error, exit 2, no output."""

import json

import numpy as np
import pytest
import tifffile

from proxscope.checkpoint import read_checkpoint
from proxscope.cli import main
from proxscope.data.io import read_points


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("spots")
    for seed in (1, 2):
        args = ["spots", "simulate", "--cells", "6", "--size", "32", "--seed", str(seed),
                "--out", str(root / f"d{seed}"), "--quiet"]
        assert main(args) == 0
    return root


@pytest.fixture(scope="module")
def checkpoint(data):
    ckpt = data / "sn.safetensors"
    args = ["spots", "train", "--data", str(data / "d1"), "--val", str(data / "d2"), "--model",
            "spotnet", "--out", str(ckpt), "--steps", "2", "--crop", "16", "--val-every", "1",
            "--quiet"]
    assert main(args) == 0
    return ckpt


def test_simulate_files(data):
    image = tifffile.imread(data / "d1" / "image.tif")
    target = tifffile.imread(data / "d1" / "target.tif")
    kernels = tifffile.imread(data / "d1" / "kernels.tif")
    yx, cols = read_points(data / "d1" / "cells.csv")
    assert image.shape == (32, 32) and target.shape == (30, 32, 32)
    assert kernels.shape[0] == 30 and kernels.shape[1] == kernels.shape[2]
    assert yx.shape == (6, 2) and set(cols) == {"total_secretion", *(f"x_{k}" for k in range(30))}
    assert 0 <= image.min() and image.max() <= 255
    np.testing.assert_allclose(
        target.sum(0)[yx[:, 0].astype(int), yx[:, 1].astype(int)].sum(),
        sum(cols[f"x_{k}"] for k in range(30)).sum(), rtol=1e-4,
    )


def test_train_resume_predict_evaluate(data, checkpoint, tmp_path, capsys):
    from proxscope.models import load

    _, extra = load(checkpoint)
    assert extra["radius"] == 3.0 and set(extra["detection"]) == {"threshold", "sigma"}

    def train_args(steps):
        return ["spots", "train", "--data", str(data / "d1"), "--val", str(data / "d2"),
                "--out", str(tmp_path / "r.safetensors"), "--steps", str(steps), "--crop", "16",
                "--val-every", "1", "--quiet"]

    assert main(train_args(2)) == 0
    assert main([*train_args(3), "--resume"]) == 0
    resumed = read_checkpoint(tmp_path / "r.safetensors.resume").extra
    assert resumed["step"] == 3 and [h["step"] for h in resumed["history"]] == [1, 2, 3]

    out = tmp_path / "pred"
    assert main(["spots", "predict", str(data / "d1" / "image.tif"), "--model", str(checkpoint),
                 "--out", str(out), "--threshold", "0", "--quiet"]) == 0
    yx, cols = read_points(out / "cells.csv")
    assert {"score", "x_0", "x_29"} <= set(cols) and len(yx) > 0
    assert np.all(np.diff(cols["score"]) <= 0)
    assert not (out / "secretion.tif").exists()  # the big per-pixel output is opt-in
    assert (out / "overlay.png").stat().st_size > 0
    assert main(["spots", "predict", str(data / "d1" / "image.tif"), "--model", str(checkpoint),
                 "--out", str(tmp_path / "pred2"), "--threshold", "0", "--save-secretion",
                 "--quiet"]) == 0
    assert tifffile.imread(tmp_path / "pred2" / "secretion.tif").shape == (30, 32, 32)
    capsys.readouterr()
    result_path = tmp_path / "eval.json"
    assert main(["spots", "evaluate", "--pred", str(out / "cells.csv"), "--truth",
                 str(data / "d1" / "cells.csv"), "--radius", "3", "--out", str(result_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(result_path.read_text())
    assert printed["n_truth"] == 6 and 0 <= printed["f1"] <= 1 and "best_f1" in printed


def test_predict_png_with_bundled_model(tmp_path):
    import imageio.v3 as iio

    from proxscope.models import available

    if "spotnet" not in available():
        pytest.skip("bundled spotnet weights not built")
    img = np.zeros((40, 40), np.uint8)
    img[10:13, 10:13] = 200
    img[28, 30] = 255
    iio.imwrite(tmp_path / "cells.png", img)
    assert main(["spots", "predict", str(tmp_path / "cells.png"), "--model", "spotnet",
                 "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert (tmp_path / "p" / "cells.csv").is_file()


def test_evaluate_hand_made(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("y,x\n10,10\n20,20\n")
    (tmp_path / "p.csv").write_text("y,x,score\n10,12,0.9\n40,40,0.5\n")
    assert main(["spots", "evaluate", "--pred", str(tmp_path / "p.csv"), "--truth",
                 str(tmp_path / "t.csv")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1) and r["best_f1"] == pytest.approx(2 / 3)


def _bad_inputs(tmp_path, data, checkpoint):
    """name -> (arguments, start of the one-line error message)."""
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((16, 16), np.nan, np.float32))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    image = str(data / "d1" / "image.tif")
    out = str(tmp_path / "out")
    return {
        "missing image": (["spots", "predict", str(tmp_path / "nope.tif"), "--out", out],
                          "error: image not found:"),
        "rgb": (["spots", "predict", str(rgb), "--model", str(checkpoint), "--out", out],
                f"error: {rgb}: expected "),
        "nan": (["spots", "predict", str(nan), "--model", str(checkpoint), "--out", out],
                f"error: {nan}: "),
        "unknown model": (["spots", "predict", image, "--model", "nosuchmodel", "--out", out],
                          "error: unknown model 'nosuchmodel'"),
        "corrupt checkpoint": (["spots", "predict", image, "--model", str(junk), "--out", out],
                               f"error: {junk}: not a readable proxscope checkpoint"),
        "missing data": (["spots", "train", "--data", str(tmp_path / "none"), "--out",
                          str(tmp_path / "out" / "m.safetensors")],
                         f"error: data folder not found: {tmp_path / 'none'}"),
        "resume without file": (["spots", "train", "--data", str(data / "d1"), "--out",
                                 str(tmp_path / "out" / "m.safetensors"), "--resume", "--quiet"],
                                "error: --resume: "),
        "bad csv": (["spots", "evaluate", "--pred", str(junk), "--truth",
                     str(data / "d1" / "cells.csv"), "--out", str(tmp_path / "out" / "e.json")],
                    f"error: {junk}: "),
        "bad size": (["spots", "simulate", "--size", "2", "--out", out],
                     "error: Invalid value for '--size': 2 is not in the range x>=8."),
        "bad radius": (["spots", "evaluate", "--pred", str(data / "d1" / "cells.csv"), "--truth",
                        str(data / "d1" / "cells.csv"), "--radius", "0"],
                       "error: Invalid value for '--radius': 0.0 is not in the range x>0."),
        "old option": (["spots", "train", "--data", str(data / "d1"), "--out",
                        str(tmp_path / "out" / "m.safetensors"), "--epochs", "3"],
                       "error: No such option '--epochs'. Did you mean '--steps'?"),
    }


def test_bad_inputs_exit_2_without_output(tmp_path, data, checkpoint, capsys):
    for name, (args, message) in _bad_inputs(tmp_path, data, checkpoint).items():
        assert main(args) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, (name, err)
        assert not (tmp_path / "out").exists(), name


def test_predict_uses_the_detect_sigma_stored_with_the_threshold(data, checkpoint, tmp_path):
    """A trained checkpoint stores the LoG sigma its threshold was fitted for; one made before
    the LoG rule (top-level ``threshold``, no ``detect_sigma``) is scored on the plain temporal
    mean."""
    from proxscope.checkpoint import save_checkpoint
    from proxscope.models import load
    from proxscope.tasks.spots.predict import DETECT_SIGMA, detect

    model, extra = load(checkpoint)
    assert extra["detection"]["sigma"] == DETECT_SIGMA
    old = tmp_path / "old.safetensors"
    save_checkpoint(old, model, extra={"threshold": extra["detection"]["threshold"]})
    out = tmp_path / "pred_old"
    assert main(["spots", "predict", str(data / "d1" / "image.tif"), "--model", str(old),
                 "--out", str(out), "--threshold", "0", "--save-secretion", "--quiet"]) == 0
    _, cols = read_points(out / "cells.csv")
    secretion = tifffile.imread(out / "secretion.tif")  # image units: scores / the input gain
    _, plain = detect(secretion, sigma=0)
    _, sharpened = detect(secretion, sigma=DETECT_SIGMA)
    np.testing.assert_allclose(cols["score"] / cols["score"][0], plain / plain[0], rtol=1e-5)
    assert len(sharpened) != len(plain) or not np.allclose(sharpened, plain)


def test_predict_and_evaluate_folders(data, checkpoint, tmp_path, capsys):
    """A folder of images -> one folder per image + summary.csv; evaluate pairs OUT/<name>/cells.csv
    with the simulated DATA/<name>/cells.csv and pools the counts over images."""
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    for name in ("d1", "d2"):
        shutil.copy(data / name / "image.tif", images / f"{name}.tif")
    out = tmp_path / "pred"
    assert main(["spots", "predict", str(images), "--model", str(checkpoint), "--out", str(out),
                 "--threshold", "0", "--quiet"]) == 0
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0] == "image,cells,threshold" and len(summary) == 3
    per_image = {}
    for name in ("d1", "d2"):
        yx, _ = read_points(out / name / "cells.csv")
        assert int(summary[1 + int(name == "d2")].split(",")[1]) == len(yx) > 0
        capsys.readouterr()
        assert main(["spots", "evaluate", "--pred", str(out / name / "cells.csv"), "--truth",
                     str(data / name / "cells.csv")]) == 0
        per_image[name] = json.loads(capsys.readouterr().out)
    assert main(["spots", "evaluate", "--pred", str(out), "--truth", str(data)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 2 and result["per_image"] == per_image
    pooled = result["pooled"]
    for key in ("tp", "fp", "fn", "n_pred", "n_truth"):
        assert pooled[key] == sum(r[key] for r in per_image.values())
    assert pooled["n_truth"] == 12
    tp, fp, fn = pooled["tp"], pooled["fp"], pooled["fn"]
    assert pooled["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert pooled["mean_best_f1"] == pytest.approx(np.mean([r["best_f1"] for r in per_image.values()]))


def test_train_batches_of_several_crops(data, tmp_path):
    out = tmp_path / "b.safetensors"
    assert main(["spots", "train", "--data", str(data / "d1"), "--val", str(data / "d2"),
                 "--model", "convnet", "--out", str(out), "--steps", "2", "--batch-size", "3",
                 "--crop", "16", "--val-every", "1", "--quiet"]) == 0
    extra = read_checkpoint(out).extra
    assert extra["batch_size"] == 3 and extra["detection"]["sigma"] == 1.0
