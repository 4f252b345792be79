"""``proxscope cells ...``, ``proxscope bench cells`` and the cells part of ``proxscope demo``.

Only click is imported at module level so ``--help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

VARIANT = click.Choice(["cnncs", "ecnncs1", "ecnncs2"])
THREADS = "CPU threads for torch; the small CNN gains little from more, and a busy machine loses."


@click.group()
def group():
    """Cell detection by compressed-sensing output encoding (CNNCS, ECNNCS-1, ECNNCS-2).

    \b
    Examples:
      proxscope cells simulate --n-images 8 --size 256 --seed 0 --out data/cells
      proxscope cells train --images data/cells/images --points data/cells/points --out cells.safetensors
      proxscope cells predict image.tif --model cnncs --out points.csv
      proxscope cells evaluate --pred points.csv --truth truth.csv --radius 4
    """


@group.command()
@click.option("--n-images", default=8, show_default=True, type=click.IntRange(1))
@click.option("--size", default=256, show_default=True, type=click.IntRange(32))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
def simulate(n_images, size, seed, out):
    """Simulated microscopy images: OUT/images/*.tif (uint16) and OUT/points/*.csv (y,x).

    Target cells sit among lookalike clutter (elongated, ring-shaped, debris, faint blobs) with
    stain and background variation.
    """
    from .simulate import write_dataset

    names = write_dataset(out, n_images, size, seed)
    click.echo(f"wrote {len(names)} images to {Path(out) / 'images'}")


@group.command()
@click.option("--images", required=True, type=click.Path(), help="Folder of .tif/.png/.jpg images.")
@click.option("--points", required=True, type=click.Path(), help="Folder of NAME.csv (y,x).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint path.")
@click.option("--variant", default="ecnncs2", show_default=True, type=VARIANT)
@click.option("--patch", default=64, show_default=True, type=click.IntRange(16), help="Multiple of 8.")
@click.option("--epochs", default=300, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--batch", default=16, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=2e-3, show_default=True, type=float)
@click.option("--bandwidth", default=4.0, show_default=True, type=float,
              help="Mean-shift bandwidth (pixels), about the cell radius.")
@click.option("--val-images", type=click.Path(), help="Validation images (default: training images).")
@click.option("--val-points", type=click.Path(), help="Validation points folder.")
@click.option("--resume", is_flag=True, help="Continue from OUT.resume.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default=None, help="cpu, cuda (default: cuda when available).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help=THREADS)
@click.option("--quiet", is_flag=True)
def train(images, points, out, variant, patch, epochs, batch, lr, bandwidth, val_images,
          val_points, resume, seed, device, threads, quiet):
    """Train a detector on annotated images (IMAGES/NAME.tif with POINTS/NAME.csv)."""
    import torch

    from ...errors import UserError
    from ...models.cnncs import CNNCSConfig
    from .train import load_annotated, train

    torch.set_num_threads(threads)
    if patch % 8:
        raise UserError(f"--patch must be a multiple of 8, got {patch}")
    if bool(val_images) != bool(val_points):
        raise UserError("give both --val-images and --val-points, or neither")
    data = load_annotated(images, points, patch)
    val = load_annotated(val_images, val_points, patch) if val_images else None
    config = CNNCSConfig(variant=variant, patch=patch, bandwidth=bandwidth)
    _, extra = train(data, out, config, epochs=epochs, batch=batch, lr=lr, seed=seed,
                     device=device, quiet=quiet, resume=resume, val_data=val, radius=bandwidth)
    click.echo(f"saved {out} (validation F1 {extra['val_f1']:.3f}, "
               f"vote threshold {extra['vote_threshold']})")


@group.command()
@click.argument("image", type=click.Path())
@click.option("--model", "model_name", default="cnncs", show_default=True,
              help="Bundled model name or checkpoint path.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Points CSV (y,x,score).")
@click.option("--device", default=None)
def predict(image, model_name, out, device):
    """Detect cell centres in IMAGE (any size; processed in overlapping tiles)."""
    from .predict import predict_file

    count = predict_file(image, model_name, out, device=device)
    click.echo(f"{count} cells -> {out}")


@group.command()
@click.option("--pred", required=True, type=click.Path(), help="Predicted CSV or folder.")
@click.option("--truth", required=True, type=click.Path(), help="Annotated CSV or folder.")
@click.option("--radius", default=4.0, show_default=True, type=float, help="Match radius rho (px).")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the JSON here (else stdout).")
def evaluate(pred, truth, radius, out):
    """Precision / recall / F1 with one-to-one matching within RADIUS pixels."""
    from ...data.io import write_json
    from .evaluate import evaluate as run

    result = run(pred, truth, radius)
    if out:
        write_json(out, result)
    click.echo(json.dumps(result, indent=2))


@click.command()
@click.option("--quick", is_flag=True, help="About 10 minutes on 2 CPU cores.")
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default=None)
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help=THREADS)
@click.option("--quiet", is_flag=True)
def bench(quick, json_path, seed, device, threads, quiet):
    """CNNCS vs ECNNCS-1 vs ECNNCS-2 vs LoG on held-out simulated images, and the
    SparseRecovery backward against autograd through ISTA (time, memory)."""
    import torch

    from .bench import run

    torch.set_num_threads(threads)
    run(json_path, quick=quick, seed=seed, device=device, quiet=quiet)
    click.echo(f"results: {json_path}")


def demo(out_dir: Path, quiet: bool = False) -> dict:
    """Bundled ECNNCS-2 on freshly simulated images: metrics and overlay figures."""
    from .demo import run_demo

    return run_demo(Path(out_dir), quiet=quiet)
