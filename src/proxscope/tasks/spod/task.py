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
PREPROCESS = click.option(
    "--preprocess", default="background", show_default=True,
    type=click.Choice(["background", "seed", "none"]),
    help="background: replace hot pixels, subtract each image's background level (eq. (3) has "
    "no background term); seed: the seed's median 5 + minimum 7 filters (they keep the "
    "background and strip most of the signal); none: as read.")
PSF_CONVENTION = click.option(
    "--psf-convention", default="convolution", show_default=True,
    type=click.Choice(["convolution", "correlation"]),
    help="convolution: the PSF is the image of a point source (a measured bead; what "
    "'spod simulate' writes); correlation: the kernel φ of the seed's eq. (1), i.e. the PSF "
    "flipped in both axes. Only matters for a PSF that is not point-symmetric.")
AXES = click.option(
    "--axes", default="auto", show_default=True, type=click.Choice(["auto", "CYX", "YXC"]),
    help="Layout of the stack: polarization axis first (CYX) or last (YXC); auto: the end "
    "axis that matches the model's channel count (or the shorter one), else an error.")


def _opt(name: str, default, kind, help: str | None = None):
    """An option with a shown default and a checked type (a range or a choice)."""
    return click.option(name, default=default, show_default=True, type=kind, help=help)


def _lam(default: str):
    """``--lam``; ``default`` says what λ is when it is not given."""
    return click.option("--lam", default=None, type=click.FloatRange(0),
                        help=f"λ of eq. (5) (default: {default}).")


NOISE_RULE = ("the noise rule: λ_core = 4·σ·||a_col|| with σ the robust noise of the stack "
              "(MAD of pixel differences)")


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
                _lam(NOISE_RULE + ", median over the training stacks, for --crop px tiles"),
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
                PREPROCESS,
                AXES,
            ],
            "predict": [
                click.option("--psf", required=True, type=FILE,
                             help="PSF image (a x b), normalised to sum 1."),
                PSF_CONVENTION,
                AXES,
                _opt("--method", "net", click.Choice(["net", "fista", "ista"]),
                     "The network (--model) or a solver of eq. (5)."),
                _opt("--iters", 1000, click.IntRange(1), "Iterations n_iter of --method fista|ista."),
                _lam("the model's for --method net, else " + NOISE_RULE),
                PREPROCESS,
            ],
            "evaluate": [
                click.option("--psf", default=None, type=FILE,
                             help="PSF (default: psf.tif in the --truth folder)."),
                PSF_CONVENTION,
                _lam(NOISE_RULE),
                PREPROCESS,
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
              preprocess: str, axes: str) -> dict:
        """Layer-wise training (Algorithm 1) of SPoD-Net or LISTA-Net on a few observations
        (folders from 'spod simulate': observation.tif and psf.tif, the PSF as the image of a
        point source; their PSFs are averaged, as in the seed).

        \b
        Examples:
          proxscope spod train --data data/s1 data/s2 --out spod.safetensors
          proxscope spod train --data data/s1 --model lista --loss supervised --out lista.safetensors
        """
        import numpy as np
        import torch

        from ...errors import UserError
        from ...models.spodnet import ARCHITECTURES
        from ...utils import seed_everything
        from .data import load_directory, prepare
        from .train import SpodTraining, rule_lam, train_spod

        seed_everything(seed)
        folders = [*data, *more_data]
        loaded = [load_directory(d, axes) for d in folders]
        if any(p.shape != loaded[0][1].shape for _, p in loaded):
            raise UserError("all PSFs must have the same size")
        if any(s.shape[0] != loaded[0][0].shape[0] for s, _ in loaded):
            raise UserError("all observations must have the same number of channels")
        psf = np.mean([p for _, p in loaded], axis=0).astype(np.float32)
        psf /= psf.sum()
        prepared = [prepare(s, preprocess) for s, _ in loaded]
        lam = rule_lam(prepared, psf, crop)[0] if lam is None else lam
        stacks = [p.y for p in prepared]
        net = ARCHITECTURES[model].from_solver(
            torch.from_numpy(psf), channels=stacks[0].shape[0], n_layers=layers, prox=prox,
            alpha=alpha, lam=lam, tile=crop)
        cfg = SpodTraining(steps=steps, lr=lr, gamma=gamma, batch_size=batch_size,
                           relative_lr=not absolute_lr, seed=seed, device=device, quiet=quiet,
                           n_train=n_train, crop=crop, loss=loss, fista_iters=fista_iters,
                           relaxed=not loss_on_output)
        records = train_spod(net, psf, stacks, cfg, out, resume=resume,
                             extra={"preprocessing": preprocess, "data": folders})
        return {"out": str(out), "model": model, "layers": layers, "lam": lam,
                "parameters": net.n_parameters(), "final_training_objective": records[-1]["loss_last"]}

    def predictor(self, *, model: str, device: str | None, seed: int, quiet: bool, psf: str,
                  psf_convention: str, axes: str, method: str, iters: int, lam: float | None,
                  preprocess: str):
        """Recover super-resolved stacks from observation stacks (TIFF c×H×W or H×W×c, see
        --axes) with the network (--method net, --model) or FISTA / ISTA on eq. (5).

        The PSF is the image of a point source (--psf-convention convolution, the default) or
        the seed's correlation kernel φ (--psf-convention correlation, the PSF flipped). The
        stack's background is removed first (--preprocess). Without --lam, FISTA / ISTA use a
        λ scaled to each stack's noise; the network uses the λ it was trained for.

        Writes the recovery as float32 TIFF c×(H+a−1)×(W+b−1) in the stack's intensity units
        (OUT, or OUT/<name>.tif for several stacks; pixel (i, j) of the observation sits at
        (i + (a−1)/2, j + (b−1)/2) of the recovery); reports L(Y, x) of eq. (5) on the
        normalised stack, λ, λ/λ_max and the recovery time. Same input and options give a
        bit-identical output on the CPU.

        \b
        Examples:
          proxscope spod predict data/s3/observation.tif --psf data/s3/psf.tif --out rec.tif
          proxscope spod predict 'data/*/observation.tif' --psf data/s1/psf.tif --out recs
          proxscope spod predict stacks/ --psf psf.tif --method fista --iters 2000 --out recs-fista
        """
        from ...data.io import write_image
        from ...models import load
        from ...models.spodnet import SPoDNet
        from ...utils import resolve_device
        from .data import read_psf, read_stack
        from .recover import recover_stack

        dev = resolve_device(device)
        psf_array = read_psf(psf, psf_convention)
        net = load(model, device=dev, expected=SPoDNet)[0] if method == "net" else None
        channels = net.config.channels if net is not None else None

        def run(image: Path, out: Path) -> dict:
            result = recover_stack(read_stack(image, axes, channels), psf_array, lam, model=net,
                                   method=method, n_iter=iters, preprocessing=preprocess,
                                   device=dev)
            write_image(out, result.x)
            return {"recovered": str(out), "method": method, "objective": result.objective,
                    "lam": result.lam, "lam_over_lam_max": result.lam_ratio,
                    "n_iter": result.n_iter, "seconds": result.seconds}

        return run

    def evaluate_pair(self, pred: Path, truth: Path, *, psf: str | None, psf_convention: str,
                      lam: float | None, preprocess: str) -> dict:
        from ...data.io import read_image
        from .data import read_psf, read_stack
        from .recover import evaluate_recovery

        folder = truth if truth.is_dir() else truth.parent
        reference = folder / "truth.tif"
        return evaluate_recovery(
            read_stack(folder / "observation.tif"),
            read_psf(psf or folder / "psf.tif", psf_convention),
            read_image(pred), lam,
            truth=read_image(reference) if reference.is_file() else None,
            preprocessing=preprocess,
        )

    def evaluate(self, pred: Path, truth: Path, **opts) -> dict:
        """Score recovered stacks as JSON: the objective L(Y, x) of eq. (5) at λ (default: the
        noise rule), λ/λ_max and, with a truth (truth.tif), fidelity on the field of view (the
        recovery without its (a−1)/2 px border): PSNR of the orientation-summed images after a
        1 px blur (psnr_db, next to psnr_zero_db of an all-zero image), their correlation, dot
        precision / recall / F1 at 2 px, the fraction of the recovered intensity within 2 px of a
        true structure (within_2px) and the orientation error in degrees. Undefined scores (a
        blank recovery) are null.

        --pred: a recovered stack, or a folder of them (<name>.tif, as predict writes).
        --truth: the stack's folder as 'spod simulate' writes it (observation.tif, psf.tif and,
        for the fidelity, truth.tif; a file in it stands for the folder), or a folder of such folders
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
