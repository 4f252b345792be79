"""SPoD CLI round trips on tiny stacks (files and folders), bad inputs, layer-wise training and
its resume."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import tifffile
import torch

from proxscope.checkpoint import read_checkpoint
from proxscope.cli import main
from proxscope.models import load
from proxscope.models.spodnet import LISTANet, SPoDNet
from proxscope.sim.spod import SPoDSimConfig, simulate
from proxscope.tasks.spod.train import SpodTraining, train_spod

TINY = ["--size", "20", "--channels", "4", "--psf-size", "5", "--psf-width", "1.5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("spod")
    for seed in (1, 2):
        assert main(["spod", "simulate", *TINY, "--seed", str(seed), "--out",
                     str(root / f"s{seed}"), "--quiet"]) == 0
    return root


def _run(capsys, args) -> dict:
    capsys.readouterr()
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_simulate_writes_stack_psf_truth(data):
    obs = tifffile.imread(data / "s1" / "observation.tif")
    truth = tifffile.imread(data / "s1" / "truth.tif")
    assert obs.shape == (4, 20, 20) and obs.dtype == np.float32
    assert truth.shape == (4, 24, 24) and tifffile.imread(data / "s1" / "psf.tif").shape == (5, 5)


def test_train_predict_evaluate_round_trip(data, tmp_path, capsys):
    ckpt = tmp_path / "net.safetensors"
    trained = _run(capsys, ["spod", "train", "--data", str(data / "s1"), str(data / "s2"), "--out",
                            str(ckpt), "--layers", "2", "--steps", "2", "--crop", "12",
                            "--n-train", "4", "--batch-size", "2"])
    assert trained["parameters"] == 2 * (5 * 5 + 4 + 2)
    meta = read_checkpoint(ckpt)
    assert meta.model_class.endswith(":SPoDNet")
    assert meta.config["n_layers"] == 2 and meta.config["tile"] == 12
    assert meta.config["prox"] == "leaky" and meta.config["lam"] == pytest.approx(trained["lam"])
    assert trained["lam"] > 0 and meta.extra["preprocessing"] == "background"
    assert [s["phase"] for s in meta.extra["stages"]] == ["opt1", "opt1", "opt2"]
    assert not (tmp_path / "net.safetensors.stages").exists()
    assert meta.extra["train"]["relaxed"] is True  # the loss on x^(M) by default
    assert meta.extra["train"]["steps"] == 2 and meta.extra["train"]["crop"] == 12
    lista = tmp_path / "lista.safetensors"
    assert main(["spod", "train", "--data", str(data / "s1"), "--out", str(lista), "--model",
                 "lista", "--prox", "nonneg", "--layers", "1", "--steps", "1", "--crop", "12",
                 "--n-train", "2", "--batch-size", "2", "--loss-on-output", "--quiet"]) == 0
    meta = read_checkpoint(lista)
    assert meta.model_class.endswith(":LISTANet") and meta.config["prox"] == "nonneg"
    assert meta.extra["train"]["relaxed"] is False
    obs, psf = data / "s2" / "observation.tif", data / "s2" / "psf.tif"
    rec = tmp_path / "rec.tif"
    printed = _run(capsys, ["spod", "predict", str(obs), "--psf", str(psf), "--model", str(ckpt),
                            "--out", str(rec)])
    net, _ = load(str(ckpt))
    assert printed["n_iter"] == 2 and printed["method"] == "net"
    assert printed["lam"] == pytest.approx(net.lam_for((20, 20)))  # the net's λ_core at 20 px
    x = tifffile.imread(rec)
    assert x.shape == (4, 24, 24) and x.min() >= 0
    assert main(["spod", "evaluate", "--pred", str(rec), "--truth", str(data / "s2"),
                 "--lam", repr(printed["lam"]), "--out", str(tmp_path / "m.json"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["objective"] == pytest.approx(printed["objective"], rel=1e-4)  # same eq. (5)
    assert np.isfinite(metrics["psnr_db"]) and 0 < metrics["nonzero_fraction"] <= 1
    assert "dot_f1" in metrics and 0 < metrics["within_2px"] <= 1
    fista = tmp_path / "fista.tif"
    fista_obj = _run(capsys, ["spod", "predict", str(obs), "--psf", str(psf), "--method", "fista",
                              "--iters", "200", "--out", str(fista), "--lam", "0.2"])["objective"]
    scores = _run(capsys, ["spod", "evaluate", "--pred", str(fista), "--truth", str(obs),
                           "--lam", "0.2"])
    assert scores["objective"] == pytest.approx(fista_obj, rel=1e-4)
    assert scores["objective"] < metrics["objective"] * 2  # 200 FISTA iterations vs 2 layers


def test_predict_and_evaluate_folders(data, tmp_path, capsys):
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    for name in ("s1", "s2"):
        shutil.copy(data / name / "observation.tif", stacks / f"{name}.tif")
    recs = tmp_path / "recs"
    assert main(["spod", "predict", str(stacks), "--psf", str(data / "s1" / "psf.tif"),
                 "--method", "ista", "--iters", "30", "--out", str(recs), "--quiet"]) == 0
    with open(recs / "summary.csv") as f:
        rows = {row["image"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == ["s1.tif", "s2.tif"] and rows["s1.tif"]["n_iter"] == "30"
    assert tifffile.imread(recs / "s2.tif").shape == (4, 24, 24)
    result = _run(capsys, ["spod", "evaluate", "--pred", str(recs), "--truth", str(data)])
    assert result["images"] == 2 and sorted(result["per_image"]) == ["s1", "s2"]
    for name in ("s1", "s2"):
        assert result["per_image"][name]["objective"] == pytest.approx(
            float(rows[f"{name}.tif"]["objective"]), rel=1e-4)
    assert result["pooled"]["psnr_db"] == pytest.approx(
        np.mean([r["psnr_db"] for r in result["per_image"].values()]))


def test_predict_accepts_plain_tiff_written_elsewhere(tmp_path):
    stack = np.random.default_rng(0).integers(0, 4000, (4, 16, 18)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "obs.tif", stack, photometric="minisblack")
    yy, xx = np.mgrid[-2:3, -2:3]
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "psf.png", (255 * np.exp(-(yy**2 + xx**2))).astype(np.uint8))
    assert main(["spod", "predict", str(tmp_path / "obs.tif"), "--psf", str(tmp_path / "psf.png"),
                 "--method", "ista", "--iters", "5", "--out", str(tmp_path / "r.tif"), "--quiet"]) == 0
    assert tifffile.imread(tmp_path / "r.tif").shape == (4, 20, 22)
    # An RGB PNG is read as a 3-channel stack (H, W, 3) -> (3, H, W).
    iio.imwrite(tmp_path / "rgb.png", stack[:3].transpose(1, 2, 0).astype(np.uint8))
    assert main(["spod", "predict", str(tmp_path / "rgb.png"), "--psf", str(tmp_path / "psf.png"),
                 "--method", "fista", "--iters", "5", "--out", str(tmp_path / "r3.tif"),
                 "--quiet"]) == 0
    assert tifffile.imread(tmp_path / "r3.tif").shape == (3, 20, 22)


def test_bad_inputs_are_one_line_errors_without_output(data, tmp_path, capsys):
    psf, obs = str(data / "s1" / "psf.tif"), str(data / "s1" / "observation.tif")
    nan = np.ones((4, 10, 10), np.float32)
    nan[0, 0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan, photometric="minisblack")
    tifffile.imwrite(tmp_path / "flat.tif", np.ones((10, 10), np.float32))
    tifffile.imwrite(tmp_path / "three.tif", np.ones((3, 20, 20), np.float32), photometric="minisblack")
    tifffile.imwrite(tmp_path / "cube.tif", np.ones((20, 20, 20), np.float32), photometric="minisblack")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    cases = [
        (["spod", "predict", str(tmp_path / "missing.tif"), "--psf", psf], "image not found"),
        (["spod", "predict", str(tmp_path / "nan.tif"), "--psf", psf, "--method", "fista"],
         "NaN or Inf"),
        (["spod", "predict", str(tmp_path / "flat.tif"), "--psf", psf, "--method", "fista"],
         "a SPoD stack must be 3-D"),
        (["spod", "predict", str(tmp_path / "cube.tif"), "--psf", psf, "--method", "fista"],
         "cannot tell the polarization axis of a stack of shape (20, 20, 20)"),
        (["spod", "predict", obs, "--psf", psf, "--model", "no-such-model"],
         "unknown model 'no-such-model'"),
        (["spod", "predict", str(tmp_path / "three.tif"), "--psf", psf],  # bundled: 18 channels
         "the model was trained for 18 channels, the stack has 3"),
        (["spod", "predict", obs, "--psf", str(tmp_path / "nan.tif"), "--method", "fista"],
         "NaN or Inf"),
        (["spod", "predict", obs, "--psf", str(tmp_path / "three.tif"), "--method", "fista"],
         "a PSF must be a 2-D image"),
        (["spod", "predict", obs, "--psf", psf, "--model", str(tmp_path / "junk.safetensors")],
         "not a readable proxscope checkpoint"),
        (["spod", "predict", obs, "--psf", psf, "--method", "lbfgs"], "Invalid value for '--method'"),
        (["spod", "predict", obs, "--psf", psf, "--method", "ista", "--iters", "0"],
         "Invalid value for '--iters'"),
        (["spod", "evaluate", "--pred", str(tmp_path / "three.tif"), "--truth", str(data / "s1")],
         "recovered image has shape (3, 20, 20)"),
        (["spod", "evaluate", "--pred", str(tmp_path), "--truth", str(data)],
         "no prediction in"),
        (["spod", "train", "--data", str(data / "s1"), "--crop", "64", "--steps", "1"],
         "observation 20x20 is smaller than the crop size 64"),
        (["spod", "train", "--data", str(data / "s1"), "--lr", "0"], "'--lr': 0.0 is not in the range x>0"),
        (["spod", "train", "--data", str(tmp_path / "nowhere")], "data folder not found"),
        (["spod", "simulate", "--size", "4"], "Invalid value for '--size'"),
    ]
    for args, message in cases:
        out = tmp_path / ("never" if args[1] == "simulate" else "never.tif")
        capsys.readouterr()
        assert main([*args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (args, err)
        assert not out.exists()
    assert not list(tmp_path.glob("*.part"))


def test_predict_is_bit_identical_and_reads_channel_last_stacks(data, tmp_path, capsys):
    """Issue 18.3/18.4: two runs give the same bytes; the stack saved channel-last (H, W, c)
    gives the same recovery."""
    obs, psf = data / "s1" / "observation.tif", str(data / "s1" / "psf.tif")
    stack = tifffile.imread(obs)
    tifffile.imwrite(tmp_path / "yxc.tif", np.moveaxis(stack, 0, -1), photometric="minisblack")
    outs = []
    for i, image in enumerate((obs, obs, tmp_path / "yxc.tif")):
        outs.append(tmp_path / f"r{i}.tif")
        assert main(["spod", "predict", str(image), "--psf", psf, "--method", "fista",
                     "--iters", "50", "--out", str(outs[-1]), "--quiet"]) == 0
    first = tifffile.imread(outs[0])
    assert first.shape == (4, 24, 24) and first.max() > 0
    for out in outs[1:]:
        assert np.array_equal(tifffile.imread(out), first)


def test_blank_stack_and_blank_prediction(data, tmp_path, capsys):
    """A blank observation recovers to 0 (no crash); a blank prediction scores dot F1 0 and
    null where a score is undefined, in strict JSON."""
    tifffile.imwrite(tmp_path / "blank.tif", np.zeros((4, 20, 20), np.float32),
                     photometric="minisblack")
    psf = str(data / "s1" / "psf.tif")
    printed = _run(capsys, ["spod", "predict", str(tmp_path / "blank.tif"), "--psf", psf,
                            "--method", "fista", "--iters", "20", "--out", str(tmp_path / "x.tif")])
    assert printed["lam"] == 0 and printed["objective"] == 0
    assert not tifffile.imread(tmp_path / "x.tif").any()
    tifffile.imwrite(tmp_path / "zero.tif", np.zeros((4, 24, 24), np.float32),
                     photometric="minisblack")
    assert main(["spod", "evaluate", "--pred", str(tmp_path / "zero.tif"), "--truth",
                 str(data / "s1"), "--out", str(tmp_path / "m.json"), "--quiet"]) == 0

    def reject(name):
        raise ValueError(name)

    scores = json.loads((tmp_path / "m.json").read_text(), parse_constant=reject)
    assert scores["dot_f1"] == 0 and scores["dot_recall"] == 0
    assert scores["within_2px"] is None and scores["orientation_error_deg"] is None
    assert scores["psnr_db"] == pytest.approx(scores["psnr_zero_db"])


def _stacks_and_psf(size, seed):
    sim = simulate(SPoDSimConfig(size=size, channels=3, psf_size=3, psf_width=1.0), seed=seed)
    return [sim["observation"] / sim["observation"].max()], sim["psf"]


def test_layerwise_resume_gives_the_same_weights(tmp_path):
    stacks, psf = _stacks_and_psf(16, 0)
    cfg = SpodTraining(steps=3, lr=1e-3, n_train=4, batch_size=2, crop=8, quiet=True)

    def fresh():
        return SPoDNet.from_solver(torch.from_numpy(psf), channels=3, n_layers=3, lam=0.1, tile=8)

    full = fresh()
    records = train_spod(full, psf, stacks, cfg, tmp_path / "a.safetensors")
    assert [(r["layer"], r["phase"]) for r in records] == [
        (1, "opt1"), (2, "opt1"), (2, "opt2"), (3, "opt1"), (3, "opt2")]

    class Crash(Exception):
        pass

    def crash_at_stage_3(m, phase, model):
        if (m, phase) == (3, "opt1"):
            raise Crash
        return {}

    with pytest.raises(Crash):
        train_spod(fresh(), psf, stacks, cfg, tmp_path / "b.safetensors", on_stage=crash_at_stage_3)
    resumed = fresh()
    train_spod(resumed, psf, stacks, cfg, tmp_path / "b.safetensors", resume=True)
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.allclose(p, q, atol=1e-7), name
    trained, untrained = ([float(p.detach()) for p in net.unrolled.step] for net in (full, fresh()))
    # Θ_1 and Θ_2 were shrunk by γ after their stages, Θ_3 (the last) was not.
    assert trained[0] < 0.5 * untrained[0]
    assert abs(trained[2] / untrained[2] - 1) < 0.5


def test_supervised_loss_trains(tmp_path):
    stacks, psf = _stacks_and_psf(12, 1)
    cfg = SpodTraining(steps=2, n_train=2, batch_size=2, crop=8, loss="supervised",
                       fista_iters=20, quiet=True)
    model = LISTANet.from_solver(torch.from_numpy(psf), channels=3, n_layers=1, prox="nonneg",
                                 lam=0.1, tile=8)
    records = train_spod(model, psf, stacks, cfg, tmp_path / "s.safetensors")
    assert len(records) == 1 and np.isfinite(records[0]["loss_last"])
    assert records[0]["loss_last"] < records[0]["loss_first"] * 10
