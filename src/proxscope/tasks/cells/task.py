"""``proxscope cells``: point detection of cells and nuclei by compressed-sensing output encoding
(CNNCS, ECNNCS-1, ECNNCS-2), on the :class:`~proxscope.tasks.base.Task` contract.

The model, its encoding and its decoding live in :mod:`proxscope.models.cnncs`; this package
holds the data handling (``train``), whole-image detection (``detect``), the benchmark
(``bench``) and the demo (``demo``).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..base import DemoResult, Task

RADIUS = 4.0  # match radius rho (pixels): the smallest simulated target radius is 3.5 px
POSITIVE = click.FloatRange(min=0, min_open=True)

#: the task's own options per verb (the shared ones come from the CLI builder)
OPTIONS = {
    "simulate": [
        click.option("--n-images", default=8, show_default=True, type=click.IntRange(1)),
        click.option("--size", default=256, show_default=True, type=click.IntRange(32)),
    ],
    "train": [
        click.option("--images", required=True, type=click.Path(),
                     help="Folder (or glob) of .tif/.png/.jpg images."),
        click.option("--points", required=True, type=click.Path(),
                     help="Folder of NAME.csv (y,x), one per image."),
        click.option("--patch", default=64, show_default=True, type=click.IntRange(16),
                     help="Training patch side, a multiple of 8."),
        click.option("--bandwidth", default=4.0, show_default=True, type=POSITIVE,
                     help="Mean-shift bandwidth (pixels), about the cell radius."),
        click.option("--val-images", type=click.Path(),
                     help="Validation images (default: the training images)."),
        click.option("--val-points", type=click.Path(), help="Validation points folder."),
    ],
    "evaluate": [
        click.option("--radius", default=RADIUS, show_default=True, type=POSITIVE,
                     help="Match radius rho (pixels)."),
    ],
}


class CellsTask(Task):
    name = "cells"
    summary = "Cell detection by compressed-sensing output encoding (CNNCS, ECNNCS-1/2)."
    models = ("cnncs",)
    default_model = "cnncs"
    architectures = ("ecnncs2", "cnncs", "ecnncs1")
    # the bundled recipe: 1200 steps of 16 64² patches (100 passes over 12 images of 256²)
    train_defaults = {"steps": 1200, "lr": 2e-3, "batch_size": 16}
    predict_suffix = ".csv"

    def options(self, verb: str) -> list:
        return OPTIONS.get(verb, [])

    def simulate(self, out: Path, *, seed: int, quiet: bool, n_images: int, size: int) -> dict:
        """Simulated microscopy images: OUT/images/*.tif (uint16) and OUT/points/*.csv (y,x).

        Target cells sit among lookalike clutter (elongated, ring-shaped, debris, faint blobs)
        with stain and background variation.

        \b
        Examples:
          proxscope cells simulate --n-images 8 --size 256 --seed 0 --out data/cells
        """
        from ...data.io import write_image, write_points
        from ...sim.cells import simulate, to_uint16

        cells = 0
        for i, (image, points) in enumerate(simulate(n_images, size, seed)):
            write_image(out / "images" / f"cells_{i:04d}.tif", to_uint16(image))
            write_points(out / "points" / f"cells_{i:04d}.csv", points)
            cells += len(points)
        return {"images": n_images, "cells": cells, "out": str(out)}

    def train(self, out: Path, *, model: str, steps: int, lr: float, batch_size: int, seed: int,
              device: str | None, resume: bool, quiet: bool, images: str, points: str,
              patch: int, bandwidth: float, val_images: str | None,
              val_points: str | None) -> dict:
        """Train a detector on annotated images (IMAGES/NAME.tif with POINTS/NAME.csv).

        One step is one batch of --batch-size random patches (random 90° turns and flips). The
        old --epochs E is E·max(pixels/patch², batch)/batch steps: the default 1200 steps are
        the bundled model's recipe, 100 passes over 12 images of 256². The vote threshold of
        the decoding is then tuned for the best F1 on the validation images (matches within
        --bandwidth pixels) and stored in the checkpoint.

        \b
        Examples:
          proxscope cells train --images data/cells/images --points data/cells/points \\
              --out cells.safetensors
          proxscope cells train --images data/cells/images --points data/cells/points \\
              --val-images val/images --val-points val/points --model cnncs --out cnncs.safetensors
        """
        from ...errors import UserError
        from ...models.cnncs import CNNCSConfig
        from .train import load_annotated, train

        if patch % 8:
            raise UserError(f"--patch must be a multiple of 8, got {patch}")
        if bool(val_images) != bool(val_points):
            raise UserError("give both --val-images and --val-points, or neither")
        data = load_annotated(images, points, patch)
        val = load_annotated(val_images, val_points, patch) if val_images else None
        _, extra = train(data, out, model, CNNCSConfig(patch=patch, bandwidth=bandwidth),
                         steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                         quiet=quiet, resume=resume, val_data=val, radius=bandwidth)
        return {"checkpoint": str(out), "steps": steps, "val_f1": extra["val_f1"]} | extra["detection"]

    def predictor(self, *, model: str, device: str | None, seed: int, quiet: bool):
        """Detect cell centres in images of any size (processed in overlapping tiles); writes
        points CSV (y,x,score) per image: OUT, or OUT/<image name>.csv and OUT/summary.csv for
        several images.

        \b
        Examples:
          proxscope cells predict data/cells/images/cells_0000.tif --out points.csv
          proxscope cells predict data/cells/images --model cells.safetensors --out pred
          proxscope cells predict 'data/cells/images/*.tif' --out pred
        """
        from ...data.io import read_image, write_points
        from .detect import detect, load_detector

        net, vote_threshold, _ = load_detector(model, device)

        def run(image: Path, out: Path) -> dict:
            points, scores = detect(net, read_image(image), vote_threshold, source=str(image))
            write_points(out, points, {"score": scores})
            return {"cells": len(points)}

        return run

    def evaluate(self, pred: Path, truth: Path, **opts) -> dict:
        """Precision / recall / F1 of predicted points (one-to-one matching within --radius
        pixels, seed Sec. 4.2), as JSON: two points CSV files, or two folders of NAME.csv
        paired by name (pooled: P/R/F1 of the counts summed over images).

        \b
        Examples:
          proxscope cells evaluate --pred points.csv --truth data/cells/points/cells_0000.csv
          proxscope cells evaluate --pred pred --truth data/cells/points --radius 4 --out scores.json
        """
        return super().evaluate(pred, truth, **opts)

    def evaluate_pair(self, pred: Path, truth: Path, *, radius: float) -> dict:
        """Precision / recall / F1 with one-to-one matching within ``radius`` pixels (seed
        Sec. 4.2)."""
        from ...data.io import read_points
        from ...metrics import match_points

        result = match_points(read_points(pred)[0], read_points(truth)[0], radius)
        return result.as_dict() | {"radius": radius}

    def pool(self, results: dict[str, dict], *, radius: float) -> dict:
        """P/R/F1 of the counts summed over images (every cell weighs the same)."""
        from ...metrics import MatchResult, pool_matches

        pooled = pool_matches(MatchResult(r["tp"], r["fp"], r["fn"], None) for r in results.values())
        return pooled.as_dict() | {"radius": radius}

    def bench(self, *, quick: bool, seed: int, device: str | None, quiet: bool) -> dict:
        """CNNCS vs ECNNCS-1 vs ECNNCS-2 vs LoG on held-out simulated images, and the
        SparseRecovery backward against autograd through ISTA (time, memory). --threads 1 is
        the recorded setting: the small CNN gains little from more threads.

        \b
        Examples:
          proxscope bench cells --quick --threads 1 --json benchmarks/results/cells-quick.json
        """
        from .bench import run

        return run(quick=quick, seed=seed, device=device, quiet=quiet)

    def demo(self, out: Path, *, quiet: bool) -> DemoResult:
        """Bundled ECNNCS-2 on freshly simulated images: metrics and overlay figures."""
        from .demo import run_demo

        return run_demo(Path(out))
