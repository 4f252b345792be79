"""``proxscope spots ...``, ``proxscope bench spots`` and the spots part of ``proxscope demo``.

Top-level imports stay light (click only) so ``--help`` is instant.
"""

from __future__ import annotations

from pathlib import Path

import click

MODEL_HELP = "Bundled model name (spotnet, convnet) or a checkpoint path."


@click.group()
def group():
    """FluoroSpot/ELISpot cell detection and per-cell secretion profiles.

    \b
    Examples:
      proxscope spots simulate --cells 250 --size 256 --seed 1 --out data/img1
      proxscope spots predict data/img1/image.tif --model spotnet --out out/img1
      proxscope spots evaluate --pred out/img1/cells.csv --truth data/img1/cells.csv
      proxscope spots train --data data/a --data data/b --val data/c --model spotnet --out sn.safetensors
    """


@group.command()
@click.option("--cells", default=1250, show_default=True, type=click.IntRange(min=0))
@click.option("--size", default=512, show_default=True, type=click.IntRange(min=8))
@click.option("--noise-level", default=3, show_default=True, type=click.IntRange(0, 8),
              help="0 = noiseless; L: Gaussian noise std sqrt(2^(-2(9-L))/12) (3: 4.5e-3).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--quiet", is_flag=True, help="No summary output.")
def simulate(cells, size, noise_level, seed, out, quiet):
    """Simulate one FluoroSpot image with the physical model (512x512 takes a few seconds).

    Writes OUT/image.tif, OUT/target.tif (K x H x W), OUT/cells.csv (y,x,total_secretion,x_k)
    and OUT/kernels.tif.
    """
    import numpy as np

    from ...sim.fluorospot import FluoroSpotConfig
    from ...sim.fluorospot import simulate as simulate_sample
    from .simulate import write_sample

    config = FluoroSpotConfig(size=size, n_cells=cells, noise_level=noise_level)
    write_sample(out, simulate_sample(config, np.random.default_rng(seed)))
    if not quiet:
        click.echo(f"simulated {cells} cells on {size}x{size} -> {out}")


@group.command()
@click.option("--data", "data", multiple=True, required=True, type=click.Path(file_okay=False),
              help="Training folder from 'spots simulate' (repeat the option).")
@click.option("--val", "val", multiple=True, type=click.Path(file_okay=False),
              help="Validation folder (repeat); default: the last 30% of --data.")
@click.option("--model", "model_name", type=click.Choice(["spotnet", "convnet"]), default="spotnet",
              show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write.")
@click.option("--steps", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--crop", default=128, show_default=True, type=click.IntRange(min=0),
              help="Random crop size of the training batches (0 = whole images).")
@click.option("--lr", default=None, type=float, help="Adam learning rate [spotnet 1e-4, convnet 1e-3].")
@click.option("--val-every", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present).")
@click.option("--resume", is_flag=True, help="Continue from OUT.resume.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(data, val, model_name, out, steps, crop, lr, val_every, seed, device, resume, quiet):
    """Train SpotNet or ConvNet on simulated folders (MSE loss, keep the best validation model)."""
    import json

    from .train import DEFAULT_LR
    from .train import train as run_train

    summary = run_train(
        model_name, data, out, val=list(val), steps=steps, crop=crop,
        lr=DEFAULT_LR[model_name] if lr is None else lr, val_every=val_every, seed=seed,
        device=device, quiet=quiet, resume=resume,
    )
    if not quiet:
        click.echo(json.dumps(summary, indent=2))


@group.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--model", "model_name", default="spotnet", show_default=True, help=MODEL_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--threshold", default=None, type=float,
              help="Score threshold (default: the model's, fixed on validation images).")
@click.option("--device", default=None, help="cpu, cuda (default: CUDA when present).")
@click.option("--quiet", is_flag=True, help="No summary output.")
def predict(image, model_name, out, threshold, device, quiet):
    """Detect cells in IMAGE (single-channel TIFF/PNG; scaled to max 255).

    Writes OUT/cells.csv (y,x,score,x_0..x_29) and OUT/secretion.tif (K x H x W).
    """
    from .predict import predict_to_dir

    summary = predict_to_dir(image, model_name, out, threshold=threshold, device=device)
    if not quiet:
        click.echo(f"{summary['cells']} cells (threshold {summary['threshold']:.4g}) -> {out}")


@group.command()
@click.option("--pred", required=True, type=click.Path(dir_okay=False), help="Predicted cells CSV.")
@click.option("--truth", required=True, type=click.Path(dir_okay=False), help="True cells CSV.")
@click.option("--radius", default=3.0, show_default=True, type=float, help="Matching radius (px).")
@click.option("--threshold", default=None, type=float, help="Keep predictions with score >= this.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write JSON here.")
def evaluate(pred, truth, radius, threshold, out):
    """Precision / recall / F1 of predicted cells (one-to-one matching within RADIUS), as JSON."""
    import json

    from .evaluate import evaluate_files

    result = evaluate_files(pred, truth, radius=radius, threshold=threshold)
    if out:
        from ...data.io import write_json

        write_json(out, result)
    click.echo(json.dumps(result, indent=2))


@click.command()
@click.option("--quick", is_flag=True, help="Few test images, bundled weights (~10 min on 2 cores).")
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--quiet", is_flag=True)
def bench(quick, json_path, seed, quiet):
    """SpotNet vs ConvNet vs APG on simulated 512x512 images with 250/750/1250 cells."""
    from .bench import run_bench

    path = run_bench(quick=quick, json_path=json_path, seed=seed, quiet=quiet)
    click.echo(f"results: {path}")


def demo(out_dir: Path, quiet: bool = False) -> dict:
    """Bundled SpotNet and ConvNet on a simulated 256x256 image (the paper's cell density)."""
    from .bench import demo as run_demo

    return run_demo(Path(out_dir), quiet=quiet)
