"""Every registered task through one harness: ``simulate -> predict -> evaluate`` (two folders)
on a tiny simulated input with the bundled model, checking real numbers.

The floors were measured on these seeds and sizes (values beside each check) and set with margin.
"""

import csv
import json
import math

import numpy as np
import pytest

from proxscope.cli import main
from proxscope.data.io import read_image, write_image
from proxscope.models import WEIGHTS_DIR
from proxscope.tasks import REGISTRY


def cli(*args) -> None:
    assert main([str(a) for a in args]) == 0, " ".join(map(str, args))


def evaluate(name: str, pred, truth, out) -> dict:
    cli(name, "evaluate", "--pred", pred, "--truth", truth, "--out", out, "--quiet")
    return json.loads(out.read_text())


def check_spots(tmp, scores):  # spotnet: F1 0.85 (17 of 20 cells found, 3 false)
    assert scores["images"] == 1 and scores["pooled"]["f1"] > 0.75


def check_spod(tmp, scores):
    """spodnet: objective 8.4e-4, PSNR 30.81 dB; the all-zero recovery: 1.5e-2 and 30.79 dB (the
    truth is sparse: PSNR barely tells the two apart, the objective of eq. (5) does)."""
    write_image(tmp / "zeros" / "s.tif", np.zeros_like(read_image(tmp / "pred" / "s.tif")))
    zeros = evaluate("spod", tmp / "zeros", tmp / "data", tmp / "zeros.json")["pooled"]
    assert math.isfinite(scores["pooled"]["objective"])
    assert 0 < scores["pooled"]["objective"] < 0.1 * zeros["objective"]
    assert scores["pooled"]["psnr_db"] > zeros["psnr_db"]


def check_cells(tmp, scores):  # cnncs: F1 0.93 (27 of 30 cells found, 1 false)
    assert scores["images"] == 2 and scores["pooled"]["f1"] > 0.8


def check_seg(tmp, scores):  # runet: mIoU 0.979, accuracy 0.995
    assert scores["images"] == 2 and scores["pooled"]["miou"] > 0.9 and scores["pooled"]["accuracy"] > 0.97


def check_retina(tmp, scores):
    with open(tmp / "pred" / "scores.csv", newline="") as f:
        probabilities = [float(row["referable_probability"]) for row in csv.DictReader(f)]
    assert len(probabilities) == 2 and all(0 <= p <= 1 for p in probabilities)
    for photo in (tmp / "data" / "s" / "images").iterdir():
        heatmap = read_image(tmp / "pred" / photo.stem / "heatmap.tif")
        assert heatmap.shape == read_image(photo).shape[:2] and np.isfinite(heatmap).all()
    lesions = {"microaneurysm", "haemorrhage", "hard_exudate", "cotton_wool_spot", "mean_froc"}
    assert lesions <= set(scores["froc"]) and 0 <= scores["auc"] <= 1


# task: (simulate options, predict arguments (simulated folder S, prediction folder P),
#        the truth (S), check). spots and spod simulate one image per folder: S is DATA/s, and the
#        prediction P/s(.tif) is named as a folder predict names it, so both evaluate folders.
CASES = {
    "spots": (["--cells", 20, "--size", 64, "--seed", 1],
              lambda s, p: [s / "image.tif", "--model", "spotnet", "--out", p / "s"],
              lambda s: s.parent, check_spots),
    "spod": (["--size", 32, "--seed", 1],
             lambda s, p: [s / "observation.tif", "--psf", s / "psf.tif", "--model", "spodnet",
                           "--out", p / "s.tif"],
             lambda s: s.parent, check_spod),
    "cells": (["--n-images", 2, "--size", 128, "--seed", 0],
              lambda s, p: [s / "images", "--model", "cnncs", "--out", p],
              lambda s: s / "points", check_cells),
    "seg": (["--n-images", 2, "--size", 64, "--seed", 0],
            lambda s, p: [s / "images", "--model", "runet", "--out", p],
            lambda s: s / "masks", check_seg),
    "retina": (["--n-images", 2, "--size", 128, "--seed", 0],
               lambda s, p: [f"{s}/images/*.png", "--model", "retina", "--out", p],
               lambda s: s, check_retina),
}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_simulate_predict_evaluate(name, tmp_path):
    simulate, predict, truth, check = CASES[name]
    if name == "retina" and not (WEIGHTS_DIR / "retina.safetensors").is_file():
        pytest.skip("bundled retina weights not yet committed")
    data = tmp_path / "data" / "s"
    cli(name, "simulate", "--out", data, "--quiet", *simulate)
    cli(name, "predict", *predict(data, tmp_path / "pred"), "--quiet", "--threads", 1)
    check(tmp_path, evaluate(name, tmp_path / "pred", truth(data), tmp_path / "scores.json"))
