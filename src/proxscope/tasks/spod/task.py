"""``proxscope spod ...`` and ``proxscope bench spod``: SPoD super-resolution on the Task contract.

simulate: :mod:`proxscope.sim.spod` (one folder per stack: observation.tif, psf.tif, truth.tif);
train: Algorithm 1 (:mod:`.train`); predict: SPoD-Net / LISTA-Net or FISTA / ISTA on eq. (5)
(:mod:`.recover`); evaluate: eq. (5) objective (+ PSNR against the truth); bench: SPoD-Net vs
FISTA and the seed's ablations (:mod:`.bench`); demo: :mod:`.demo`. Only click and the contract
are imported here; each verb imports what it needs.

Seed: spodnet-lista-spod-microscopy.txt.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..base import FOLDER, DemoResult, Task

FILE = click.Path(dir_okay=False)
NO_PREPROCESS = click.option("--no-preprocess", is_flag=True,
                             help="Skip the median 5 + minimum 7 filtering.")


def _opt(name: str, default, kind, help: str | None = None):
    """An option with a shown default and a checked type (a range or a choice)."""
    return click.option(name, default=default, show_default=True, type=kind, help=help)


def _lam(default: str):
    """``--lam``; ``default`` says what λ is when it is not given."""
    return click.option("--lam", default=None, type=click.FloatRange(0), help="λ of eq. (5) "
                        f"(default: {default}DEFAULT_LAM of proxscope.operators.spod, 0.1).")


class SpodTask(Task):
    name = "spod"
    summary = "SPoD super-resolution recovery of polarization stacks (SPoD-Net, LISTA-Net, FISTA)."
    models = ("spodnet",)
    default_model = "spodnet"
    architectures = ("spodnet", "lista")
    train_defaults = {"steps": 40, "lr": 0.05, "batch_size": 4}
    predict_suffix = ".tif"
    evaluate_suffixes = (".tif", ".tiff")
    evaluate_filename = "observation.tif"

    def options(self, verb: str) -> list:
        positive = click.FloatRange(0, min_open=True)
        return {
            "simulate": [
                _opt("--size", 96, click.IntRange(8), "Observation height = width (px)."),
                _opt("--channels", 18, click.IntRange(2), "Polarization channels c."),
                _opt("--psf-size", 32, click.IntRange(1), "PSF size a = b (px)."),
                _opt("--psf-kind", "airy", click.Choice(["airy", "gaussian"])),
                _opt("--psf-width", 5.0, positive, "Airy first dark ring radius / 2·Gaussian sigma (px)."),
                _opt("--filaments", 8, click.IntRange(0)),
                _opt("--dots", 25, click.IntRange(0)),
                _opt("--photons", 400.0, positive,
                     "Expected photon count at the brightest pixel (shot noise)."),
            ],
            "train": [
                click.option("--data", required=True, multiple=True, type=FOLDER,
                             help="Folder(s) with observation.tif + psf.tif; repeat or list several."),
                click.argument("more_data", nargs=-1, type=FOLDER),
                _opt("--layers", 10, click.IntRange(1), "Number of layers M."),
                _opt("--prox", "leaky", click.Choice(["leaky", "nonneg"]),
                     "Each layer's threshold function: LST (eq. 11) or NST (eq. 7)."),
                _opt("--alpha", 0.1, click.FloatRange(0), "LST leak alpha."),
                _opt("--loss", "unsupervised", click.Choice(["unsupervised", "supervised"]),
                     "Eq. (9) (the objective) or eq. (8) (distance to FISTA solutions)."),
                _lam(""),
                click.option("--absolute-lr", is_flag=True, help="Plain Adam learning rates (the "
                             "seed: 1e-4); default: --lr is relative to each tensor's scale. Opt2 "
                             "uses 0.2·lr for the new layer, 0.02·lr for the others."),
                _opt("--gamma", 0.3, click.FloatRange(0, 1, min_open=True),
                     "Shrink factor of Algorithm 1 (1 = no shrink; the bundled model uses 1)."),
                _opt("--crop", 64, click.IntRange(1), "Training crop size (px)."),
                _opt("--n-train", 100, click.IntRange(1), "Augmented crops N."),
                _opt("--fista-iters", 1000, click.IntRange(1), "FISTA iterations per supervised target."),
                click.option("--loss-on-output", is_flag=True, help="Take the loss on [x]_+ instead "
                             "of the last iterate x^(M) (the bundled model's choice; with LST the "
                             "default keeps gradients when outputs are zeroed)."),
                NO_PREPROCESS,
            ],
            "predict": [
                click.option("--psf", required=True, type=FILE,
                             help="PSF image (a x b), normalised to sum 1."),
                _opt("--method", "net", click.Choice(["net", "fista", "ista"]),
                     "The network (--model) or a solver of eq. (5)."),
                _opt("--iters", 1000, click.IntRange(1), "Iterations n_iter of --method fista|ista."),
                _lam("the model's for --method net, else "),
                NO_PREPROCESS,
            ],
            "evaluate": [
                click.option("--psf", default=None, type=FILE,
                             help="PSF (default: psf.tif in the --truth folder)."),
                _lam(""),
                NO_PREPROCESS,
            ],
        }.get(verb, [])

    def simulate(self, out: Path, *, seed: int, quiet: bool, size: int, channels: int, psf_size: int,
                 psf_kind: str, psf_width: float, filaments: int, dots: int, photons: float) -> dict:
        """Simulate a stack: OUT/observation.tif (c×S×S), psf.tif, truth.tif (c×(S+P−1)²).

        \b
        Examples:
          proxscope spod simulate --size 96 --seed 1 --out data/s1
          proxscope spod simulate --size 64 --photons 100 --seed 2 --out data/s2
        """
        from ...data.io import write_image
        from ...sim.spod import SPoDSimConfig
        from ...sim.spod import simulate as run

        config = SPoDSimConfig(size=size, channels=channels, psf_size=psf_size, psf_kind=psf_kind,
                               psf_width=psf_width, n_filaments=filaments, n_dots=dots,
                               photons=photons)
        data = run(config, seed)
        for name, array in data.items():
            write_image(out / f"{name}.tif", array)
        return {"out": str(out), **{name: list(array.shape) for name, array in data.items()}}

    def train(self, out: Path, *, model: str, steps: int, lr: float, batch_size: int, seed: int,
              device: str | None, quiet: bool, resume: bool, data, more_data, layers: int,
              prox: str, alpha: float, loss: str, lam: float | None, absolute_lr: bool,
              gamma: float, crop: int, n_train: int, fista_iters: int, loss_on_output: bool,
              no_preprocess: bool) -> dict:
        """Layer-wise training (Algorithm 1) of SPoD-Net or LISTA-Net on a few observations
        (folders from 'spod simulate'; their PSFs are averaged, as in the seed).

        \b
        Examples:
          proxscope spod train --data data/s1 data/s2 --out spod.safetensors
          proxscope spod train --data data/s1 --model lista --loss supervised --out lista.safetensors
        """
        import numpy as np
        import torch

        from ...errors import UserError
        from ...models.spodnet import ARCHITECTURES
        from ...operators.spod import DEFAULT_LAM
        from ...utils import seed_everything
        from .data import load_directory, prepare
        from .train import SpodTraining, train_spod

        seed_everything(seed)
        folders = [*data, *more_data]
        loaded = [load_directory(d) for d in folders]
        if any(p.shape != loaded[0][1].shape for _, p in loaded):
            raise UserError("all PSFs must have the same size")
        if any(s.shape[0] != loaded[0][0].shape[0] for s, _ in loaded):
            raise UserError("all observations must have the same number of channels")
        psf = np.mean([p for _, p in loaded], axis=0).astype(np.float32)
        psf /= psf.sum()
        stacks = [prepare(s, not no_preprocess).y for s, _ in loaded]
        net = ARCHITECTURES[model].from_solver(
            torch.from_numpy(psf), channels=stacks[0].shape[0], n_layers=layers, prox=prox,
            alpha=alpha, lam=DEFAULT_LAM if lam is None else lam, tile=crop)
        cfg = SpodTraining(steps=steps, lr=lr, gamma=gamma, batch_size=batch_size,
                           relative_lr=not absolute_lr, seed=seed, device=device, quiet=quiet,
                           n_train=n_train, crop=crop, loss=loss, fista_iters=fista_iters,
                           relaxed=not loss_on_output)
        records = train_spod(net, psf, stacks, cfg, out, resume=resume,
                             extra={"preprocessing": not no_preprocess, "data": folders})
        return {"out": str(out), "model": model, "layers": layers,
                "parameters": net.n_parameters(), "final_training_objective": records[-1]["loss_last"]}

    def predictor(self, *, model: str, device: str | None, seed: int, quiet: bool, psf: str,
                  method: str, iters: int, lam: float | None, no_preprocess: bool):
        """Recover super-resolved stacks from observation stacks (TIFF c×H×W; an RGB image is
        read as 3 channels) with the network (--method net, --model) or FISTA / ISTA on eq. (5).

        Writes the recovery as float32 TIFF c×(H+a−1)×(W+b−1) in the stack's intensity units
        (OUT, or OUT/<name>.tif for several stacks); reports L(Y, x) of eq. (5) on the
        normalised stack and the recovery time.

        \b
        Examples:
          proxscope spod predict data/s3/observation.tif --psf data/s3/psf.tif --out rec.tif
          proxscope spod predict 'data/*/observation.tif' --psf data/s1/psf.tif --out recs
          proxscope spod predict stacks/ --psf psf.tif --method fista --iters 2000 --out recs-fista
        """
        from ...data.io import write_image
        from ...models import load
        from ...models.spodnet import SPoDNet
        from ...operators.spod import DEFAULT_LAM
        from ...utils import resolve_device
        from .data import read_psf, read_stack
        from .recover import recover_stack

        dev = resolve_device(device)
        psf_array = read_psf(psf)
        net = load(model, device=dev, expected=SPoDNet)[0] if method == "net" else None
        lam = lam if lam is not None else net.config.lam if net is not None else DEFAULT_LAM

        def run(image: Path, out: Path) -> dict:
            result = recover_stack(read_stack(image), psf_array, lam, model=net, method=method,
                                   n_iter=iters, preprocessing=not no_preprocess, device=dev)
            write_image(out, result.x)
            return {"recovered": str(out), "method": method, "objective": result.objective,
                    "lam": lam, "n_iter": result.n_iter, "seconds": result.seconds}

        return run

    def evaluate_pair(self, pred: Path, truth: Path, *, psf: str | None, lam: float | None,
                      no_preprocess: bool) -> dict:
        from ...data.io import read_image
        from ...operators.spod import DEFAULT_LAM
        from .data import read_psf, read_stack
        from .recover import evaluate_recovery

        folder = truth if truth.is_dir() else truth.parent
        reference = folder / "truth.tif"
        return evaluate_recovery(
            read_stack(folder / "observation.tif"), read_psf(psf or folder / "psf.tif"),
            read_image(pred), DEFAULT_LAM if lam is None else lam,
            truth=read_image(reference) if reference.is_file() else None,
            preprocessing=not no_preprocess,
        )

    def pool(self, results: dict[str, dict], **opts) -> dict:
        """The mean of every score; λ, a setting, as it was."""
        return super().pool(results) | {"lam": next(iter(results.values()))["lam"]}

    def evaluate(self, pred: Path, truth: Path, **opts) -> dict:
        """Score recovered stacks as JSON: the objective L(Y, x) of eq. (5) and, with a truth,
        the PSNR.

        --pred: a recovered stack, or a folder of them (<name>.tif, as predict writes).
        --truth: the stack's folder as 'spod simulate' writes it (observation.tif, psf.tif and,
        for PSNR, truth.tif; a file in it stands for the folder), or a folder of such folders
        named like the predictions (<name>/observation.tif), scored per stack and averaged.
        The truth side is a folder, not one file, because eq. (5) needs the observation and
        the PSF as well as the recovery.

        \b
        Examples:
          proxscope spod evaluate --pred rec.tif --truth data/s3
          proxscope spod evaluate --pred recs --truth data --out scores.json
        """
        if pred.is_file():
            return self.evaluate_pair(pred, truth, **opts)
        return super().evaluate(pred, truth, **opts)

    def bench(self, *, quick: bool, seed: int, device: str | None, quiet: bool) -> dict:
        """SPoD-Net vs FISTA (quality, speed, size) and the seed's two ablations, on one CPU
        thread unless --device names another device.

        \b
        Examples:
          proxscope bench spod --quick --json benchmarks/results/spod-quick.json
        """
        from .bench import run_bench

        return run_bench(quick, seed=seed, device=device, quiet=quiet)

    def demo(self, out: Path, *, quiet: bool) -> DemoResult:
        from .demo import run_demo

        return run_demo(Path(out))
