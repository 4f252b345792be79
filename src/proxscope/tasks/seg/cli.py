"""``proxscope seg ...``, ``proxscope bench seg`` and the seg part of ``proxscope demo``.

Top-level imports stay light (click only) so ``--help`` is instant.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

MODELS = ("unet", "runet", "segnet", "rsegnet")


def _echo_json(payload: dict, quiet: bool = False) -> None:
    if not quiet:
        click.echo(json.dumps(payload, indent=2))


@click.group(name="seg")
def group():
    """Noise-robust segmentation with a TV-regularized softmax (UNet/RUNet, SegNet/RSegNet).

    \b
    Examples:
      proxscope seg simulate --n-images 40 --size 128 --seed 0 --out data/wbc
      proxscope seg train --images data/wbc/images --masks data/wbc/masks --model runet \\
          --out runet.safetensors
      proxscope seg predict cell.png --model runet --out mask.tif --overlay overlay.png
      proxscope seg evaluate --pred mask.tif --truth data/wbc/masks/sim_000.tif
    """


@group.command()
@click.option("--n-images", default=20, show_default=True, type=int, help="Number of images.")
@click.option("--size", default=128, show_default=True, type=int, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--gaussian", default=0.0, show_default=True, type=float,
              help="Gaussian noise sigma on the [0, 1] intensity scale.")
@click.option("--salt-pepper", default=0.0, show_default=True, type=float,
              help="Fraction of pixels set to black or white.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder; gets images/NAME.tif (RGB uint8) and masks/NAME.tif (class ids).")
@click.option("--quiet", is_flag=True)
def simulate(n_images, size, seed, gaussian, salt_pepper, out, quiet):
    """Simulate white-blood-cell-like RGB images and masks (0 background, 1 cytoplasm, 2 nucleus).

    \b
    Example:
      proxscope seg simulate --n-images 40 --size 128 --seed 0 --out data/wbc
    """
    from .simulate import simulate_to_folder

    names = simulate_to_folder(out, n_images, size, seed, gaussian, salt_pepper)
    if not quiet:
        click.echo(f"wrote {len(names)} images to {Path(out) / 'images'} and masks to "
                   f"{Path(out) / 'masks'}")


@group.command()
@click.option("--images", required=True, type=click.Path(), help="Folder of images NAME.*")
@click.option("--masks", required=True, type=click.Path(), help="Folder of masks NAME.tif")
@click.option("--model", "arch", default="runet", show_default=True, type=click.Choice(MODELS))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint path.")
@click.option("--noisy-train", default=0.0, show_default=True, type=float,
              help="Fraction of training images given Gaussian (0.05) or 1% salt-and-pepper noise.")
@click.option("--steps", default=1000, show_default=True, type=int)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--patch", default=96, show_default=True, type=int, help="Training crop size.")
@click.option("--lr", default=2e-3, show_default=True, type=float, help="Adam learning rate.")
@click.option("--lam", default=1.0, show_default=True, type=float,
              help="Initial TV weight of RUNet/RSegNet (learned).")
@click.option("--base-channels", default=8, show_default=True, type=int)
@click.option("--val-fraction", default=0.15, show_default=True, type=float,
              help="Images held out to pick the best checkpoint (none below 5 images).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present).")
@click.option("--resume", is_flag=True, help="Continue from OUT.resume.")
@click.option("--quiet", is_flag=True)
def train(images, masks, arch, out, noisy_train, steps, batch_size, patch, lr, lam,
          base_channels, val_fraction, seed, device, resume, quiet):
    """Train a segmentation net; the number of classes comes from the masks.

    \b
    Example:
      proxscope seg train --images data/wbc/images --masks data/wbc/masks \\
          --model runet --noisy-train 0.33 --out runet.safetensors
    """
    from ...errors import UserError
    from .data import load_pairs
    from .train import SegTrainOptions, fit_segmentation

    if not 0 <= val_fraction < 1:
        raise UserError("--val-fraction must be in [0, 1)")
    _, image_list, mask_list = load_pairs(images, masks)
    options = SegTrainOptions(
        steps=steps, batch_size=batch_size, patch=patch, lr=lr, lam=lam,
        base_channels=base_channels, noisy_fraction=noisy_train, val_fraction=val_fraction,
        seed=seed, device=device, quiet=quiet,
    )
    model, history = fit_segmentation(image_list, mask_list, arch, out, options, resume=resume)
    last = history[-1] if history else {}
    summary = {"out": out, "steps": last.get("step", 0), "final_loss": last.get("loss"),
               "best_val_1_minus_miou": min((h["val"] for h in history if "val" in h),
                                            default=None)}
    if model.tv is not None:
        summary["lam"] = float(model.tv.lam.detach())
    _echo_json(summary, quiet)


@group.command()
@click.argument("image", type=click.Path())
@click.option("--model", "model_name", default="runet", show_default=True,
              help="Bundled name (unet, runet) or checkpoint path.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Label mask (uint8 .tif or .png).")
@click.option("--tv-iters", default=None, type=int,
              help="TV softmax iterations (default: the model's, 100).")
@click.option("--post-tv-lam", default=None, type=float,
              help="Plain nets only: apply a TV softmax with this lam at test time (post-TV).")
@click.option("--probs", default=None, type=click.Path(dir_okay=False),
              help="Also write class probabilities (C, H, W) float32 TIFF.")
@click.option("--overlay", default=None, type=click.Path(dir_okay=False),
              help="Also write a PNG overlay of the mask on the image.")
@click.option("--device", default=None)
@click.option("--quiet", is_flag=True)
def predict(image, model_name, out, tv_iters, post_tv_lam, probs, overlay, device, quiet):
    """Segment IMAGE (grayscale or RGB, any size; tiled) into a class-id mask.

    \b
    Example:
      proxscope seg predict cell.png --model runet --out mask.tif --overlay overlay.png
    """
    from .predict import predict_file

    _echo_json(predict_file(image, model_name, out, tv_iters, post_tv_lam, probs, overlay,
                            device), quiet)


@group.command()
@click.option("--pred", required=True, type=click.Path(), help="Predicted mask or folder.")
@click.option("--truth", required=True, type=click.Path(), help="Ground-truth mask or folder.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--quiet", is_flag=True)
def evaluate(pred, truth, out, quiet):
    """Accuracy, mIoU, per-class IoU and RE (regularization effect) as JSON.

    \b
    Example:
      proxscope seg evaluate --pred mask.tif --truth data/wbc/masks/sim_000.tif
    """
    from ...data.io import write_json
    from .evaluate import evaluate_paths

    report = evaluate_paths(pred, truth)
    if out is not None:
        write_json(out, report)
    _echo_json(report, quiet)


@click.command(name="seg")
@click.option("--quick", is_flag=True, help="Small protocol (3-10 minutes on 2 cores; full: ~30).")
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default=None)
@click.option("--quiet", is_flag=True)
def bench(quick, json_path, seed, device, quiet):
    """Tables 1-2 of the seed on simulated WBC images: UNet vs RUNet (+ post-TV), clean and
    noisy training, tested on clean / Gaussian / salt-and-pepper images; TVSoftmax timing.

    \b
    Example:
      proxscope bench seg --quick --json benchmarks/results/seg-quick.json
    """
    from .bench import run_benchmark

    run_benchmark(json_path, quick=quick, seed=seed, device=device, quiet=quiet)


def demo(out_dir: Path, quiet: bool = False) -> dict:
    """Bundled UNet and RUNet on simulated clean and noisy images: figures and metrics."""
    from .demo import run_demo

    return run_demo(Path(out_dir), quiet=quiet)
