"""The retina task end to end on tiny simulated photographs: simulate -> train -> predict (file
and folder) -> evaluate through the CLI, heatmaps at the photograph's size, one-line errors."""

import json

import numpy as np
import pytest
import tifffile

from proxscope.cli import main
from proxscope.data.fundus import mask_to_canvas, preprocess_fundus
from proxscope.sim.fundus import FundusConfig, simulate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("retina")
    data = root / "data"
    assert main(["retina", "simulate", "--n-images", "6", "--size", "256", "--seed", "1",
                 "--out", str(data), "--quiet"]) == 0
    ckpt = root / "net.safetensors"
    assert main(["retina", "train", "--images", str(data / "images"), "--labels", str(data / "labels.csv"),
                 "--lesions", str(data / "lesions"), "--size", "200", "--steps", "2", "--val-every", "1",
                 "--batch-size", "2", "--nu", "1e-3", "--out", str(ckpt), "--quiet"]) == 0
    return data, ckpt


def test_cli_round_trip_file_folder_evaluate(trained, tmp_path, capsys):
    data, ckpt = trained
    photo = sorted((data / "images").glob("*.png"))[0]
    assert main(["retina", "predict", str(photo), "--model", str(ckpt), "--out", str(tmp_path / "one"),
                 "--quiet"]) == 0
    score = json.loads((tmp_path / "one" / "score.json").read_text())
    assert 0.0 <= score["referable_probability"] <= 1.0
    heatmap = tifffile.imread(tmp_path / "one" / "heatmap.tif")
    assert heatmap.shape == (256, 256) and heatmap.dtype == np.float32 and (heatmap >= 0).all()
    assert heatmap.max() > 0
    assert (tmp_path / "one" / "overlay.png").is_file()

    assert main(["retina", "predict", str(data / "images"), "--model", str(ckpt), "--out",
                 str(tmp_path / "all"), "--method", "sensitivity", "--quiet"]) == 0
    rows = (tmp_path / "all" / "scores.csv").read_text().splitlines()
    assert rows[0] == "image,referable_probability,method,model" and len(rows) == 7
    capsys.readouterr()
    assert main(["retina", "evaluate", "--pred", str(tmp_path / "all"), "--truth", str(data)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 6
    assert result["auc"] is None or 0.0 <= result["auc"] <= 1.0
    assert set(result["froc"]) == {"microaneurysm", "haemorrhage", "hard_exudate", "cotton_wool_spot",
                                   "mean_froc"}
    assert all(v is None or 0.0 <= v <= 1.0 for v in result["froc"].values())


def test_ensemble_keeps_the_best_net_per_criterion_across_restarts(tmp_path):
    import torch

    from proxscope.checkpoint import read_checkpoint
    from proxscope.tasks.retina.train import EnsembleKeeper

    net = torch.nn.Linear(2, 1)
    net.config = {"in_features": 2}
    keeper = EnsembleKeeper(tmp_path / "ens", {"nu": 1e-3})
    keeper.update(net, {"auc": 0.7, "haemorrhage": 0.4, "microaneurysm": None}, step=10)
    with torch.no_grad():
        net.weight.fill_(3.0)
    keeper.update(net, {"auc": 0.6, "haemorrhage": 0.5}, step=20)
    again = EnsembleKeeper(tmp_path / "ens", {"nu": 1e-3})  # a resumed run
    assert again.best == {"auc": 0.7, "haemorrhage": 0.5}
    assert read_checkpoint(tmp_path / "ens" / "auc.safetensors").extra["step"] == 10
    assert read_checkpoint(tmp_path / "ens" / "haemorrhage.safetensors").tensors["weight"].eq(3).all()


def test_user_errors_are_one_line(trained, tmp_path, capsys):
    _, ckpt = trained
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, np.random.default_rng(0).random((64, 64), np.float32))
    blank = tmp_path / "blank.png"
    import imageio.v3 as iio

    iio.imwrite(blank, np.zeros((64, 64, 3), np.uint8))
    for image, message in ((grey, "RGB"), (blank, "field of view"), (tmp_path / "missing.png", "not found")):
        capsys.readouterr()
        code = main(["retina", "predict", str(image), "--model", str(ckpt), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and err.count("\n") == 1, err
        assert message in err, err
    assert not (tmp_path / "o").exists()


def test_lesion_masks_keep_every_lesion_on_the_canvas():
    from skimage.measure import label

    sample = simulate(FundusConfig(size=512), np.random.default_rng([3, 4]))
    pre = preprocess_fundus(sample.image, fov_width=256)
    canvas = mask_to_canvas(sample.mask, pre.geometry)
    assert canvas.shape == (256, 256)
    for kind in (1, 2, 4):  # exudate spots of one cluster may merge at half resolution
        assert label(canvas == kind).max() == label(sample.mask == kind).max()


def test_12_bit_photograph_scores_like_the_8_bit_one(trained, tmp_path):
    from proxscope.tasks.retina.predict import load_model, predict_photo

    data, ckpt = trained
    import imageio.v3 as iio

    photo = iio.imread(sorted((data / "images").glob("*.png"))[0])
    twelve = (photo.astype(np.uint16) * 16 + 8)  # 12-bit camera values in a uint16 file
    net, _ = load_model(str(ckpt))
    p8, h8 = predict_photo(net, photo)
    p12, h12 = predict_photo(net, twelve)
    assert p12 == pytest.approx(p8, abs=1e-3)
    assert np.corrcoef(h8.ravel(), h12.ravel())[0, 1] > 0.99


def test_folder_with_a_bad_image_predicts_the_rest_and_exits_2(trained, tmp_path, capsys):
    import shutil

    data, ckpt = trained
    folder = tmp_path / "mixed"
    folder.mkdir()
    for photo in sorted((data / "images").glob("*.png"))[:2]:
        shutil.copy(photo, folder / photo.name)
    tifffile.imwrite(folder / "grey.tif", np.ones((64, 64), np.float32))
    capsys.readouterr()
    code = main(["retina", "predict", str(folder), "--model", str(ckpt), "--out", str(tmp_path / "o"),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "1 of 3 images could not be predicted" in err
    rows = (tmp_path / "o" / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("image,referable_probability") and rows[0].endswith(",error")
    assert sum("RGB" in row for row in rows[1:]) == 1
    assert len(list((tmp_path / "o").glob("*/score.json"))) == 2


def test_out_that_is_a_file_and_bad_lr_are_one_line_errors(trained, tmp_path, capsys):
    data, ckpt = trained
    photo = sorted((data / "images").glob("*.png"))[0]
    (tmp_path / "afile").write_text("x")
    cases = [
        (["retina", "predict", str(photo), "--model", str(ckpt), "--out", str(tmp_path / "afile")],
         "it is a file"),
        (["retina", "train", "--images", str(data / "images"), "--labels", str(data / "labels.csv"),
          "--lr", "nan", "--out", str(tmp_path / "m.safetensors")], "finite"),
        (["retina", "train", "--images", str(data / "images"), "--labels", str(data / "labels.csv"),
          "--lr", "-1", "--out", str(tmp_path / "m.safetensors")], "--lr"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1 and message in err, err


def test_resume_with_another_nu_is_refused(trained, capsys):
    data, ckpt = trained
    capsys.readouterr()
    code = main(["retina", "train", "--images", str(data / "images"), "--labels", str(data / "labels.csv"),
                 "--size", "200", "--steps", "3", "--nu", "0", "--resume", "--out", str(ckpt), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nu 0.001 -> 0.0" in err, err


def test_evaluate_a_single_photograph_prediction(trained, tmp_path, capsys):
    data, ckpt = trained
    photo = sorted((data / "images").glob("*.png"))[0]
    assert main(["retina", "predict", str(photo), "--model", str(ckpt), "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["retina", "evaluate", "--pred", str(tmp_path / "p"), "--truth", str(data)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 1 and result["auc"] is None  # one image: AUC undefined
    assert list(result["per_image"]) == [photo.stem]
