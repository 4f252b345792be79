"""``proxscope seg``: noise-robust semantic segmentation with a TV-regularized softmax
(UNet/RUNet, SegNet/RSegNet; seed tv-regularized-softmax-segmentation.txt).

simulate: white-blood-cell-like phantoms (:mod:`proxscope.sim.segmentation`); train: the core
Trainer on image / mask folders (:mod:`.train`); predict: a class-id mask per image
(:mod:`.predict`); evaluate: accuracy, mIoU, per-class IoU and RE (seed eq. 4.1); bench: the
shape of the seed's Tables 1-2 (:mod:`.bench`); demo: bundled UNet vs RUNet (:mod:`.demo`).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..base import DemoResult, Task


class SegTask(Task):
    name = "seg"
    summary = "Noise-robust segmentation with a TV-regularized softmax (UNet/RUNet, SegNet/RSegNet)."
    models = ("unet", "runet")
    default_model = "runet"
    architectures = ("runet", "unet", "rsegnet", "segnet")
    train_defaults = {"steps": 1000, "lr": 2e-3, "batch_size": 8}
    predict_suffix = ".tif"
    evaluate_suffixes = (".tif", ".tiff", ".png")

    def options(self, verb: str) -> list:
        opt = click.option
        return {
            "simulate": [
                opt("--n-images", default=20, show_default=True, type=click.IntRange(1),
                    help="Number of images."),
                opt("--size", default=128, show_default=True, type=click.IntRange(32),
                    help="Image side in pixels."),
                opt("--gaussian", default=0.0, show_default=True, type=click.FloatRange(0, 1),
                    help="Gaussian noise sigma on the [0, 1] intensity scale."),
                opt("--salt-pepper", default=0.0, show_default=True, type=click.FloatRange(0, 1),
                    help="Fraction of pixels set to black or white."),
            ],
            "train": [
                opt("--images", required=True, type=click.Path(),
                    help="Folder (or glob) of images NAME.tif/.png/.jpg, grey or RGB."),
                opt("--masks", required=True, type=click.Path(),
                    help="Folder of masks NAME.tif/.png (class ids, 0 = background)."),
                opt("--noisy-train", default=0.0, show_default=True, type=click.FloatRange(0, 1),
                    help="Fraction of training images given Gaussian (0.05) or 1% salt-and-pepper noise."),
                opt("--patch", default=96, show_default=True, type=click.IntRange(8),
                    help="Training crop size."),
                opt("--lam", default=1.0, show_default=True, type=click.FloatRange(0, min_open=True),
                    help="Initial TV weight of RUNet/RSegNet (learned)."),
                opt("--base-channels", default=8, show_default=True, type=click.IntRange(1)),
                opt("--val-fraction", default=0.15, show_default=True,
                    type=click.FloatRange(0, 1, max_open=True),
                    help="Images held out to pick the best checkpoint (none below 5 images)."),
            ],
            "predict": [
                opt("--tv-iters", default=None, type=click.IntRange(0),
                    help="TV softmax iterations (default: the model's, 100)."),
                opt("--post-tv-lam", default=None, type=click.FloatRange(0, min_open=True),
                    help="Plain nets only: apply a TV softmax with this lam at test time (post-TV)."),
                opt("--probs", is_flag=True,
                    help="Also write class probabilities (C, H, W) float32 as MASK.probs.tif."),
                opt("--overlay", is_flag=True,
                    help="Also write the mask over the image as MASK.overlay.png."),
                opt("--diameter", default=None, type=click.FloatRange(0, min_open=True),
                    help="Object diameter (px) in your images; they are resampled so objects get "
                         "the size the model was trained on (bundled: white blood cells of "
                         "60 px) and the masks mapped back. Default: no resampling."),
            ],
        }.get(verb, [])

    def simulate(self, out: Path, *, seed: int, quiet: bool, n_images: int, size: int,
                 gaussian: float, salt_pepper: float) -> dict:
        """Simulate white-blood-cell-like RGB images with masks (0 background, 1 cytoplasm,
        2 nucleus): OUT/images/sim_000.tif (uint8 RGB) and OUT/masks/sim_000.tif (uint8).

        \b
        Examples:
          proxscope seg simulate --n-images 40 --size 128 --seed 0 --out data/wbc
          proxscope seg simulate --n-images 10 --gaussian 0.05 --seed 1 --out data/wbc-noisy
        """
        import numpy as np

        from ...data.io import write_image
        from ...sim.segmentation import add_noise, simulate_wbc

        for i in range(n_images):
            rng = np.random.default_rng([seed, i])
            image, mask = simulate_wbc(size, rng)
            image = add_noise(add_noise(image, "gaussian", gaussian, rng), "salt_pepper", salt_pepper, rng)
            image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
            write_image(out / "masks" / f"sim_{i:03d}.tif", mask)
            write_image(out / "images" / f"sim_{i:03d}.tif", image)
        return {"images": str(out / "images"), "masks": str(out / "masks"), "n_images": n_images}

    def train(self, out: Path, *, images: str, masks: str, model: str, steps: int, lr: float,
              batch_size: int, seed: int, device: str | None, resume: bool, quiet: bool,
              noisy_train: float, patch: int, lam: float, base_channels: int,
              val_fraction: float) -> dict:
        """Train a segmentation net on IMAGES/NAME.* with MASKS/NAME.tif (the number of classes
        comes from the masks); the checkpoint with the best validation mIoU goes to OUT.

        \b
        Examples:
          proxscope seg train --images data/wbc/images --masks data/wbc/masks --out runet.safetensors
          proxscope seg train --images data/wbc/images --masks data/wbc/masks \\
              --model unet --noisy-train 0.33 --steps 300 --out unet-noisy.safetensors
        """
        from .data import load_pairs
        from .train import fit_segmentation

        net, history = fit_segmentation(
            *load_pairs(images, masks), model, out, steps=steps, batch_size=batch_size, patch=patch,
            lr=lr, lam=lam, base_channels=base_channels, noisy_fraction=noisy_train,
            val_fraction=val_fraction, seed=seed, device=device, quiet=quiet, resume=resume)
        summary = {"out": str(out), "steps": history[-1]["step"], "final_loss": history[-1]["loss"],
                   "best_val_1_minus_miou": min((h["val"] for h in history if "val" in h), default=None)}
        if net.tv is not None:
            summary["lam"] = float(net.tv.lam.detach())
        return summary

    def predictor(self, *, model: str, device: str | None, seed: int, quiet: bool,
                  tv_iters: int | None, post_tv_lam: float | None, probs: bool, overlay: bool,
                  diameter: float | None):
        """Segment images (grey or RGB, any size; tiled) into uint8 class-id masks (.tif or
        .png). --probs / --overlay also write MASK.probs.tif and MASK.overlay.png beside each
        mask (for OUT/cell.tif: OUT/cell.probs.tif, OUT/cell.overlay.png). Several images give
        OUT/<image name>.tif and OUT/summary.csv.

        Bundled models (unet, runet): trained on simulated brightfield blood-smear phantoms
        only (RGB, 40 images of 128x128 px, clean): one white blood cell (median diameter
        60 px) among red cells; classes 0 background (red cells included), 1 cytoplasm,
        2 nucleus. On other images (e.g. fluorescence nuclei) they are not meant to work: train
        your own with 'seg train'; --diameter rescales for another object size.

        \b
        Examples:
          proxscope seg predict cell.png --out mask.tif --overlay
          proxscope seg predict big-smear.tif --diameter 120 --out mask.tif
          proxscope seg predict data/wbc-noisy/images --model unet --post-tv-lam 1 --out masks-post
          proxscope seg predict 'data/wbc/images/*.tif' --probs --tv-iters 50 --out masks"""
        from .predict import make_predictor

        return make_predictor(model, device, tv_iters, post_tv_lam, probs, overlay, diameter)

    def evaluate(self, pred: Path, truth: Path, **opts) -> dict:
        """Accuracy, mIoU, per-class IoU, RE (regularization effect, seed eq. 4.1) and the
        confusion matrix of predicted masks against the truth: two files, or two folders paired
        by name (pooled: accuracy and IoU over all pixels, RE averaged over images).

        \b
        Examples:
          proxscope seg evaluate --pred mask.tif --truth data/wbc/masks/sim_000.tif
          proxscope seg evaluate --pred masks --truth data/wbc/masks --out scores.json
        """
        return super().evaluate(pred, truth, **opts)

    def evaluate_pair(self, pred: Path, truth: Path, **opts) -> dict:
        from .evaluate import score_masks

        return score_masks(pred, truth)

    def pool(self, results: dict[str, dict], **opts) -> dict:
        from .evaluate import pool_scores

        return pool_scores(list(results.values()))

    def bench(self, *, quick: bool, seed: int, device: str | None, quiet: bool) -> dict:
        """Tables 1-2 of the seed on simulated WBC images: UNet vs RUNet (+ post-TV), clean and
        noisy training, tested on clean / Gaussian / salt-and-pepper images; TVSoftmax timing
        (quick: 3-10 minutes on 2 cores; full: about 30).

        \b
        Examples:
          proxscope bench seg --quick --json benchmarks/results/seg-quick.json
        """
        from .bench import run_benchmark

        return run_benchmark(quick=quick, seed=seed, device=device, quiet=quiet)

    def demo(self, out: Path, *, quiet: bool) -> DemoResult:
        """Bundled UNet and RUNet on simulated clean and noisy images: figure and metrics."""
        from .demo import run_demo

        return run_demo(out)
