"""``proxscope spots ...`` and ``proxscope bench spots``: the spots task on the Task contract.

Only click and the contract are imported here (``--help`` stays instant); each verb imports its
module: :mod:`.simulate`, :mod:`.train`, :mod:`.predict`, :mod:`.evaluate`, :mod:`.bench`,
:mod:`.demo`.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..base import FOLDER, DemoResult, Task


class SpotsTask(Task):
    name = "spots"
    summary = "FluoroSpot/ELISpot cell detection and per-cell secretion profiles."
    models = ("spotnet", "convnet")
    default_model = "spotnet"
    architectures = ("spotnet", "convnet")
    train_defaults = {"steps": 2000, "lr": None, "batch_size": 1}
    evaluate_filename = "cells.csv"  # predict_suffix "": a folder per image (OUT/<name>/cells.csv)

    def options(self, verb: str) -> list:
        opt = click.option
        if verb == "simulate":
            return [
                opt("--cells", default=1250, show_default=True, type=click.IntRange(min=0)),
                opt("--size", default=512, show_default=True, type=click.IntRange(min=8)),
                opt("--noise-level", default=3, show_default=True, type=click.IntRange(0, 8),
                    help="0 = noiseless; L: Gaussian noise std sqrt(2^(-2(9-L))/12) (3: 4.5e-3)."),
            ]
        if verb == "train":
            return [
                opt("--data", multiple=True, required=True, type=FOLDER,
                    help="Training folder from 'spots simulate' (repeat the option)."),
                opt("--val", multiple=True, type=FOLDER,
                    help="Validation folder (repeat); default: the last 30% of --data."),
                opt("--crop", default=128, show_default=True, type=click.IntRange(min=0),
                    help="Random crop size of the training batches (0 = whole images)."),
                opt("--val-every", default=100, show_default=True, type=click.IntRange(min=1),
                    help="Validate and write OUT.resume every N steps."),
            ]
        threshold = opt("--threshold", default=None, type=float,
                        help="Keep cells with score >= this (predict default: the model's, fixed "
                        "on validation images; evaluate: all).")
        if verb == "predict":
            return [threshold,
                    opt("--save-secretion", is_flag=True,
                        help="Also write OUT/secretion.tif, the K x H x W output maps (float32: "
                        "120 bytes per pixel, 503 MB for 2048 x 2048).")]
        if verb == "evaluate":
            return [opt("--radius", default=3.0, show_default=True,
                        type=click.FloatRange(min=0, min_open=True), help="Matching radius (px)."),
                    threshold]
        return []

    def simulate(self, out: Path, *, seed: int, quiet: bool, cells: int, size: int,
                 noise_level: int) -> dict:
        """Simulate one FluoroSpot image with the physical model (512x512 takes a few seconds).

        Writes OUT/image.tif, OUT/target.tif (K x H x W), OUT/cells.csv (y,x,total_secretion,x_k)
        and OUT/kernels.tif.

        \b
        Examples:
          proxscope spots simulate --cells 250 --size 256 --seed 1 --out data/a
        """
        import numpy as np

        from ...sim.fluorospot import FluoroSpotConfig
        from ...sim.fluorospot import simulate as simulate_sample
        from .simulate import write_sample

        config = FluoroSpotConfig(size=size, n_cells=cells, noise_level=noise_level)
        write_sample(out, simulate_sample(config, np.random.default_rng(seed)))
        return {"out": str(out), "cells": cells, "size": size, "noise_level": noise_level}

    def train(self, out: Path, *, model: str, data, val, **opts) -> dict:
        """Train SpotNet or ConvNet on simulated folders (Adam, MSE loss on random crops, keep
        the best validation model; default lr: spotnet 3e-3 with its steps, thresholds and
        momenta at 1e-2, convnet 1e-3), then fix the detection threshold on the validation
        folders. The validation loss shown is MSE / MSE of an all-zero output (near 1: the net
        still outputs about nothing).

        \b
        Examples:
          proxscope spots train --data data/a --data data/b --val data/c --out spotnet.safetensors
          proxscope spots train --data data/a --data data/b --model convnet --steps 500 --out cn.safetensors
        """
        from .train import train

        return train(model, data, out, val=list(val), **opts)

    def predictor(self, *, model: str, device: str | None, seed: int, quiet: bool,
                  threshold: float | None = None, save_secretion: bool = False):
        """Detect cells and their secretion profiles in single-channel FluoroSpot images (TIFF/PNG,
        8/16-bit or float). Intensities are scaled robustly: the 0.1 % percentile goes to 0 and
        the brightest spot (3x3 median, so hot pixels do not count) to 255, but a signal under
        100 noise standard deviations (an empty well) is not stretched.

        Bundled models: trained on simulated FluoroSpot images (512 x 512, 6.45 um pixels,
        1250 cells, K = 30 spread bins, noise level 3). Spot sizes are set by the diffusion
        physics and the pixel size, not by the cells, so there is no --diameter: images must
        have about 6.45 um pixels (resample them first otherwise).

        Writes OUT/cells.csv (y,x,score,x_0..x_29: the profile, in the image's units) and
        OUT/overlay.png (and OUT/secretion.tif with --save-secretion); for several images one
        such folder per image, OUT/<image name>/ (OUT/<folder name>/ when the image names
        repeat), and OUT/summary.csv.

        \b
        Examples:
          proxscope spots predict data/a/image.tif --out out/a
          proxscope spots predict 'data/*/image.tif' --model convnet --out out
          proxscope spots predict images/ --out out/images
        """
        from .predict import predictor

        return predictor(model, device, threshold, save_secretion)

    def evaluate_pair(self, pred: Path, truth: Path, *, radius: float, threshold: float | None) -> dict:
        from .evaluate import evaluate_files

        return evaluate_files(pred, truth, radius=radius, threshold=threshold)

    def pool(self, results: dict[str, dict], **opts) -> dict:
        from .evaluate import pool_scores

        return pool_scores(results)

    def evaluate(self, pred: Path, truth: Path, **opts) -> dict:
        """Precision / recall / F1 of predicted cells (one-to-one matching within RADIUS), as
        JSON: two cells CSV files, or two folders of per-image folders (OUT/<name>/cells.csv
        against DATA/<name>/cells.csv), pooled over images.

        \b
        Examples:
          proxscope spots evaluate --pred out/a/cells.csv --truth data/a/cells.csv
          proxscope spots evaluate --pred out --truth data --radius 3 --out scores.json
        """
        return super().evaluate(pred, truth, **opts)

    def bench(self, *, quick: bool, seed: int, device: str | None, quiet: bool) -> dict:
        """SpotNet vs ConvNet vs APG on simulated 512x512 images with 250/750/1250 cells.

        \b
        Examples:
          proxscope bench spots --quick --json benchmarks/results/spots-quick.json
        """
        from .bench import run_bench

        return run_bench(quick, seed=seed, device=device, quiet=quiet)

    def demo(self, out: Path, *, quiet: bool) -> DemoResult:
        from .demo import run_demo

        return run_demo(Path(out))
