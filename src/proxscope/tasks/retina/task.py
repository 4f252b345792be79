"""``proxscope retina ...`` and ``proxscope bench retina``: referable-DR screening with lesion
heatmaps on the Task contract. Only click and the contract are imported here; each verb imports
its module (:mod:`.data`, :mod:`.train`, :mod:`.predict`, :mod:`.evaluate`, :mod:`.bench`,
:mod:`.demo`).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..base import FOLDER, DemoResult, Task


class RetinaTask(Task):
    name = "retina"
    summary = "Referable diabetic-retinopathy screening with lesion heatmaps (net B, sparsity-enhanced)."
    models = ("retina", "retina-plain")
    default_model = "retina"
    architectures = ("netb", "alexnet")
    train_defaults = {"steps": 1500, "lr": 1e-3, "batch_size": 8}
    summary_name = "scores.csv"

    def options(self, verb: str) -> list:
        if verb == "simulate":
            return [
                click.option("--n-images", default=100, show_default=True, type=click.IntRange(1)),
                click.option("--size", default=512, show_default=True, type=click.IntRange(64),
                             help="Photograph side (px)."),
            ]
        if verb == "train":
            return [
                click.option("--images", required=True, type=FOLDER, help="Folder of RGB photographs."),
                click.option("--labels", required=True, type=click.Path(dir_okay=False),
                             help="CSV with columns image,referable (0/1)."),
                click.option("--lesions", default=None, type=FOLDER,
                             help="Optional lesion masks NAME.tif (types 0-4) for lesion-level validation."),
                click.option("--nu", default=1e-3, show_default=True, type=click.FloatRange(min=0),
                             help="Weight of the heatmap sparsity penalty (seed eq. 6); 0 = plain MSE."),
                click.option("--size", default=256, show_default=True, type=click.IntRange(200),
                             help="Network input: field-of-view width in px."),
                click.option("--val-fraction", default=0.2, show_default=True,
                             type=click.FloatRange(0, 1, min_open=True, max_open=True)),
                click.option("--val-every", default=100, show_default=True, type=click.IntRange(1),
                             help="Validate, keep ensemble members and write OUT.resume every N steps."),
            ]
        if verb == "predict":
            from .model import METHODS

            return [click.option("--method", default="hue", show_default=True, type=click.Choice(METHODS),
                                 help="Heatmap: hue-constrained sensitivity (seed eq. 3), sensitivity "
                                      "(eq. 2), LRP, Grad-CAM (coarse: the last conv map is 2x2, "
                                      "quadrant-level only) or occlusion (slow).")]
        return []

    def simulate(self, out: Path, *, seed: int, quiet: bool, n_images: int, size: int) -> dict:
        """Simulate fundus photographs with lesions and confounders.

        Writes OUT/images/NAME.png (RGB), OUT/labels.csv (image,grade,referable) and
        OUT/lesions/NAME.tif (lesion type per pixel: 1 microaneurysm, 2 haemorrhage, 3 hard
        exudate, 4 cotton-wool spot).

        \b
        Examples:
          proxscope retina simulate --n-images 200 --size 512 --seed 0 --out data/fundus
        """
        import csv

        from ...sim.fundus import write_dataset

        write_dataset(out, n_images, size, seed)
        with open(out / "labels.csv", newline="") as f:
            referable = sum(int(row["referable"]) for row in csv.DictReader(f))
        return {"out": str(out), "images": n_images, "referable": referable, "size": size}

    def train(self, out: Path, *, model: str, images, labels, lesions, nu: float, size: int,
              val_fraction: float, val_every: int, steps: int, lr: float, batch_size: int, seed: int,
              device: str | None, resume: bool, quiet: bool) -> dict:
        """Train a referral net on image-level labels (MSE, L2 5e-4, Adam, lr / 10 on plateaus)
        with the sparsity-enhanced hue-constrained criterion (--nu); keeps the best-AUC net at
        OUT and the seed's checkpoint ensemble (best per lesion type, on average, on AUC) in
        OUT.ensemble/.

        \b
        Examples:
          proxscope retina train --images data/fundus/images --labels data/fundus/labels.csv \\
              --lesions data/fundus/lesions --nu 1e-3 --out retina.safetensors
          proxscope retina train --images data/fundus/images --labels data/fundus/labels.csv \\
              --nu 0 --model alexnet --steps 1000 --out plain.safetensors
        """
        from .data import load_set, split
        from .train import RetinaTrainOptions, train

        dataset = load_set(images, labels, lesions, size, quiet=quiet)
        train_index, val_index = split(len(dataset.labels), val_fraction, seed)
        options = RetinaTrainOptions(arch=model, size=size, nu=nu, steps=steps, lr=lr,
                                     batch_size=batch_size, val_every=val_every, seed=seed,
                                     device=device, quiet=quiet)
        return train(dataset.subset(train_index), dataset.subset(val_index), out, options, resume=resume)

    def predictor(self, *, model: str, device: str | None, seed: int, quiet: bool, method: str):
        """Referral probability and lesion heatmap of RGB fundus photographs (JPEG/PNG/TIFF, any
        size, any field-of-view position).

        Writes OUT/score.json ({"referable_probability": p}), OUT/heatmap.tif (float32, the
        photograph's size) and OUT/overlay.png; for several photographs one such folder per
        photograph, OUT/<name>/, and OUT/scores.csv.

        \b
        Examples:
          proxscope retina predict photo.jpg --out out/photo
          proxscope retina predict data/fundus/images --method sensitivity --out out/fundus
          proxscope retina predict 'data/fundus/images/*.png' --model retina-plain --out out/plain
        """
        from .predict import load_model, predict_to_dir

        net, _ = load_model(model, device)
        return lambda image, out: predict_to_dir(net, image, out, method, model)

    def evaluate(self, pred: Path, truth: Path) -> dict:
        """Image-level ROC AUC and lesion-level FROC (area for 0-10 false positives per image,
        / 10; per lesion type and mean) of a 'retina predict' folder against a dataset folder
        (labels.csv, lesions/NAME.tif).

        \b
        Examples:
          proxscope retina evaluate --pred out/fundus --truth data/fundus --out scores.json
        """
        from .evaluate import evaluate

        return evaluate(pred, truth)

    def bench(self, *, quick: bool, seed: int, device: str | None, quiet: bool) -> dict:
        """Tables 2-4 of the seed on simulated photographs: nu sweep (AUC, mean FROC), FROC per
        lesion type for each heatmap criterion, checkpoint ensemble, and timings.

        \b
        Examples:
          proxscope bench retina --quick --json benchmarks/results/retina-quick.json
        """
        from .bench import run_bench

        return run_bench(quick=quick, seed=seed, device=device, quiet=quiet)

    def demo(self, out: Path, *, quiet: bool) -> DemoResult:
        from .demo import run_demo

        return run_demo(Path(out), quiet=quiet)
