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
#: what the bundled model was trained on (``--help``, README, checkpoint ``trained_on``)
BUNDLED = ("ECNNCS-2 trained on simulated grey fluorescence-like images (proxscope.sim.cells): "
           "target nuclei of radius 3.5-6 px (diameter about 11 px) among lookalike clutter, "
           "1 channel")

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
        click.option("--diameter", type=POSITIVE,
                     help="Object diameter (pixels) in these images; default: estimated from "
                          "the annotations. Images are resampled so objects are 10.8 px across."),
        click.option("--bandwidth", default=4.0, show_default=True, type=POSITIVE,
                     help="Mean-shift bandwidth (pixels at the model's scale, 10.8 px objects)."),
        click.option("--val-images", type=click.Path(),
                     help="Validation images (default: the training images)."),
        click.option("--val-points", type=click.Path(), help="Validation points folder."),
    ],
    "predict": [
        click.option("--diameter", type=POSITIVE,
                     help="Object diameter (pixels) in the images: resampled to the model's "
                          "object size. Default: the size the model was trained on (the "
                          "bundled model: 10.8 px)."),
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
              patch: int, diameter: float | None, bandwidth: float, val_images: str | None,
              val_points: str | None) -> dict:
        """Train a detector on annotated images (IMAGES/NAME.tif with POINTS/NAME.csv).

        Object size: --diameter, or estimated from the images at the annotated centres
        (scale-space Laplacian of Gaussian); every image is resampled so objects are 10.8 px
        across (the network's scale), and the size is stored in the checkpoint: `cells
        predict` resamples new images the same way (override with its --diameter).

        One step is one batch of --batch-size random patches (random 90° turns and flips). The
        old --epochs E is E·max(pixels/patch², batch)/batch steps: the default 1200 steps are
        the bundled model's recipe, 100 passes over 12 images of 256². The checkpoint kept is
        the one with the best F1 on the validation images (matches within 4 px at the model's
        scale), with the decoding's vote threshold tuned for it.

        \b
        Examples:
          proxscope cells train --images data/cells/images --points data/cells/points \\
              --out cells.safetensors
          proxscope cells train --images data/cells/images --points data/cells/points \\
              --val-images val/images --val-points val/points --model cnncs --out cnncs.safetensors
        """
        from ...errors import UserError
        from ...models.cnncs import CNNCSConfig
        from .train import estimate_diameter, load_annotated, to_model_scale, train

        if patch % 8:
            raise UserError(f"--patch must be a multiple of 8, got {patch}")
        if bool(val_images) != bool(val_points):
            raise UserError("give both --val-images and --val-points, or neither")
        raw = load_annotated(images, points)
        channels = raw[0]["channels"]
        diameter = diameter or estimate_diameter(raw, channels)
        config = CNNCSConfig(patch=patch, bandwidth=bandwidth)
        data = to_model_scale(raw, config, diameter)
        val = to_model_scale(load_annotated(val_images, val_points), config, diameter) if val_images else None
        _, extra = train(data, out, model, config, steps=steps, batch_size=batch_size, lr=lr,
                         seed=seed, device=device, quiet=quiet, resume=resume, val_data=val,
                         data_diameter=diameter)
        return {"checkpoint": str(out), "steps": steps, "val_f1": extra["val_f1"],
                "diameter": diameter} | extra["detection"]

    def predictor(self, *, model: str, device: str | None, seed: int, quiet: bool,
                  diameter: float | None):
        """Detect cell centres in images of any size (processed in overlapping tiles); writes
        points CSV (y,x,score) per image: OUT, or OUT/<image name>.csv and OUT/summary.csv for
        several images.

        Object size: the bundled model was trained on simulated grey images with nuclei of
        radius 3.5-6 px (diameter about 11 px); for other sizes give --diameter (pixels),
        e.g. --diameter 24 for nuclei of radius 12 px: the image is resampled to the model's
        size and the points mapped back. A model trained with `cells train` resamples to the
        size of its training objects by default.

        \b
        Examples:
          proxscope cells predict data/cells/images/cells_0000.tif --out points.csv
          proxscope cells predict data/cells/images --model cells.safetensors --out pred
          proxscope cells predict 'data/cells/images/*.tif' --out pred
          proxscope cells predict nuclei.tif --diameter 24 --out points.csv
        """
        from ...data.io import read_image, write_points
        from .detect import DATA_DIAMETER_KEY, detect, load_detector, model_diameter

        net, vote_threshold, extra = load_detector(model, device)
        trained = model_diameter(net, extra)
        diameter = diameter or extra.get(DATA_DIAMETER_KEY)

        def run(image: Path, out: Path) -> dict:
            points, scores = detect(net, read_image(image), vote_threshold, str(image), diameter,
                                    trained)
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
        """CNNCS vs ECNNCS-1 vs ECNNCS-2 (D learned and D frozen) over 3 training seeds vs LoG
        on held-out simulated images; own-data training at object radii 3, 6, 12 px; the
        SparseRecovery backward against autograd through ISTA (time, memory). --threads 1 is
        the recorded setting: the small CNN gains little from more threads (quick: ~30 min).

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
