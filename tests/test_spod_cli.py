"""SPoD CLI round trips on tiny stacks, bad inputs, layer-wise training and its resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from proxscope.checkpoint import read_checkpoint
from proxscope.cli import main
from proxscope.sim.spod import SPoDSimConfig, simulate
from proxscope.tasks.spod.train import LayerwiseConfig, build_model, train_layerwise

TINY = ["--size", "20", "--channels", "4", "--psf-size", "5", "--psf-width", "1.5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("spod")
    for seed in (1, 2):
        assert main(["spod", "simulate", *TINY, "--seed", str(seed), "--out",
                     str(root / f"s{seed}")]) == 0
    return root


def test_simulate_writes_stack_psf_truth(data):
    obs = tifffile.imread(data / "s1" / "observation.tif")
    truth = tifffile.imread(data / "s1" / "truth.tif")
    assert obs.shape == (4, 20, 20) and obs.dtype == np.float32
    assert truth.shape == (4, 24, 24) and tifffile.imread(data / "s1" / "psf.tif").shape == (5, 5)


def test_train_predict_evaluate_round_trip(data, tmp_path, capsys):
    ckpt = tmp_path / "net.safetensors"
    assert main(["spod", "train", "--data", str(data / "s1"), str(data / "s2"), "--out",
                 str(ckpt), "--layers", "2", "--steps", "2", "--crop", "12", "--n-train", "4",
                 "--batch-size", "2", "--quiet"]) == 0
    meta = read_checkpoint(ckpt)
    assert meta.config["n_layers"] == 2 and meta.config["tile"] == 12
    assert [s["phase"] for s in meta.extra["stages"]] == ["opt1", "opt1", "opt2"]
    assert not (tmp_path / "net.safetensors.stages").exists()
    assert meta.extra["train"]["relaxed"] is True  # the loss on x^(M) by default
    on_output = tmp_path / "on_output.safetensors"
    assert main(["spod", "train", "--data", str(data / "s1"), "--out", str(on_output), "--layers",
                 "1", "--steps", "1", "--crop", "12", "--n-train", "2", "--batch-size", "2",
                 "--loss-on-output", "--quiet"]) == 0
    assert read_checkpoint(on_output).extra["train"]["relaxed"] is False
    obs, psf = data / "s2" / "observation.tif", data / "s2" / "psf.tif"
    rec = tmp_path / "rec.tif"
    capsys.readouterr()
    assert main(["spod", "predict", str(obs), "--psf", str(psf), "--model", str(ckpt),
                 "--out", str(rec)]) == 0
    printed = float(capsys.readouterr().out.split()[1])
    x = tifffile.imread(rec)
    assert x.shape == (4, 24, 24) and x.min() >= 0
    assert main(["spod", "evaluate", "--observation", str(obs), "--psf", str(psf),
                 "--recovered", str(rec), "--truth", str(data / "s2" / "truth.tif"),
                 "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["objective"] == pytest.approx(printed, rel=1e-4)  # same eq. (5) value
    assert np.isfinite(metrics["psnr_db"])
    capsys.readouterr()
    fista = tmp_path / "fista.tif"
    assert main(["spod", "predict", str(obs), "--psf", str(psf), "--method", "fista",
                 "--iters", "200", "--out", str(fista), "--lam", "0.1"]) == 0
    fista_obj = float(capsys.readouterr().out.split()[1])
    assert main(["spod", "evaluate", "--observation", str(obs), "--psf", str(psf),
                 "--recovered", str(fista), "--lam", "0.1"]) == 0
    assert json.loads(capsys.readouterr().out)["objective"] == pytest.approx(fista_obj, rel=1e-4)


def test_predict_accepts_plain_tiff_written_elsewhere(tmp_path):
    stack = np.random.default_rng(0).integers(0, 4000, (4, 16, 18)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "obs.tif", stack)
    yy, xx = np.mgrid[-2:3, -2:3]
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "psf.png", (255 * np.exp(-(yy**2 + xx**2))).astype(np.uint8))
    assert main(["spod", "predict", str(tmp_path / "obs.tif"), "--psf", str(tmp_path / "psf.png"),
                 "--method", "ista", "--iters", "5", "--out", str(tmp_path / "r.tif")]) == 0
    assert tifffile.imread(tmp_path / "r.tif").shape == (4, 20, 22)
    # An RGB PNG is read as a 3-channel stack (H, W, 3) -> (3, H, W).
    iio.imwrite(tmp_path / "rgb.png", stack[:3].transpose(1, 2, 0).astype(np.uint8))
    assert main(["spod", "predict", str(tmp_path / "rgb.png"), "--psf", str(tmp_path / "psf.png"),
                 "--method", "fista", "--iters", "5", "--out", str(tmp_path / "r3.tif")]) == 0
    assert tifffile.imread(tmp_path / "r3.tif").shape == (3, 20, 22)


def _bad(tmp_path, args):
    out = tmp_path / "never.tif"
    code = main([*args, "--out", str(out)])
    assert code == 2 and not out.exists()
    assert not list(tmp_path.glob("*.part"))


def test_bad_inputs_exit_2_without_output(data, tmp_path):
    psf, obs = str(data / "s1" / "psf.tif"), str(data / "s1" / "observation.tif")
    nan = np.ones((4, 10, 10), np.float32)
    nan[0, 0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    tifffile.imwrite(tmp_path / "flat.tif", np.ones((10, 10), np.float32))
    tifffile.imwrite(tmp_path / "three.tif", np.ones((3, 20, 20), np.float32))
    _bad(tmp_path, ["spod", "predict", str(tmp_path / "missing.tif"), "--psf", psf,
                    "--method", "fista"])
    _bad(tmp_path, ["spod", "predict", str(tmp_path / "nan.tif"), "--psf", psf, "--method",
                    "fista"])
    _bad(tmp_path, ["spod", "predict", str(tmp_path / "flat.tif"), "--psf", psf, "--method",
                    "fista"])
    _bad(tmp_path, ["spod", "predict", obs, "--psf", psf, "--model", "no-such-model"])
    _bad(tmp_path, ["spod", "predict", obs, "--psf", psf])  # neither model nor method
    _bad(tmp_path, ["spod", "predict", str(tmp_path / "three.tif"), "--psf", psf, "--model",
                    "spodnet"])  # 3 channels vs the bundled 18
    _bad(tmp_path, ["spod", "predict", obs, "--psf", str(tmp_path / "nan.tif"), "--method",
                    "fista"])  # a PSF must be 2-D
    _bad(tmp_path, ["spod", "evaluate", "--observation", obs, "--psf", psf, "--recovered",
                    str(tmp_path / "three.tif")])
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    _bad(tmp_path, ["spod", "predict", obs, "--psf", psf, "--model",
                    str(tmp_path / "junk.safetensors")])


def test_layerwise_resume_gives_the_same_weights(tmp_path):
    sim = simulate(SPoDSimConfig(size=16, channels=3, psf_size=3, psf_width=1.0), seed=0)
    stacks, psf = [sim["observation"] / sim["observation"].max()], sim["psf"]
    cfg = LayerwiseConfig(steps=3, lr=1e-3, n_train=4, batch_size=2, crop=8, quiet=True)

    def fresh():
        return build_model("spodnet", psf, 3, 3, "leaky", 0.1, 8).float()

    full = fresh()
    records = train_layerwise(full, psf, stacks, cfg, tmp_path / "a.safetensors")
    assert [(r["layer"], r["phase"]) for r in records] == [
        (1, "opt1"), (2, "opt1"), (2, "opt2"), (3, "opt1"), (3, "opt2")]

    class Crash(Exception):
        pass

    def crash_at_stage_3(m, phase, model):
        if (m, phase) == (3, "opt1"):
            raise Crash
        return {}

    with pytest.raises(Crash):
        train_layerwise(fresh(), psf, stacks, cfg, tmp_path / "b.safetensors",
                        on_stage=crash_at_stage_3)
    resumed = fresh()
    train_layerwise(resumed, psf, stacks, cfg, tmp_path / "b.safetensors", resume=True)
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.allclose(p, q, atol=1e-7), name
    untrained = fresh()
    # Θ_1 and Θ_2 were shrunk by γ after their stages, Θ_3 (the last) was not.
    assert float(full.unrolled.step[0]) < 0.5 * float(untrained.unrolled.step[0])
    assert abs(float(full.unrolled.step[2]) / float(untrained.unrolled.step[2]) - 1) < 0.5


def test_supervised_loss_trains(tmp_path):
    sim = simulate(SPoDSimConfig(size=12, channels=3, psf_size=3, psf_width=1.0), seed=1)
    stacks, psf = [sim["observation"] / sim["observation"].max()], sim["psf"]
    cfg = LayerwiseConfig(steps=2, n_train=2, batch_size=2, crop=8, loss="supervised",
                          fista_iters=20, quiet=True)
    model = build_model("lista", psf, 3, 1, "nonneg", 0.1, 8).float()
    records = train_layerwise(model, psf, stacks, cfg, tmp_path / "s.safetensors")
    assert len(records) == 1 and np.isfinite(records[0]["loss_last"])
