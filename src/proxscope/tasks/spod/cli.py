"""``proxscope spod ...``: simulate, train, predict, evaluate; ``proxscope bench spod``; demo.

Only click is imported at module level so ``--help`` is instant.
"""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_LAM = 0.1


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def group():
    """SPoD super-resolution recovery of polarization stacks (SPoD-Net, LISTA-Net, FISTA).

    \b
    Examples:
      proxscope spod simulate --size 96 --seed 1 --out data/spod1
      proxscope spod train --data data/spod1 data/spod2 --out spod.safetensors
      proxscope spod predict data/spod3/observation.tif --psf data/spod3/psf.tif \\
          --model spodnet --out recovered.tif
      proxscope spod predict OBS.tif --psf PSF.tif --method fista --iters 2000 --out rec.tif
      proxscope spod evaluate --observation OBS.tif --psf PSF.tif --recovered rec.tif
    """


@group.command()
@click.option("--size", default=96, show_default=True, help="Observation height = width (px).")
@click.option("--channels", default=18, show_default=True, help="Polarization channels c.")
@click.option("--psf-size", default=32, show_default=True, help="PSF size a = b (px).")
@click.option("--psf-kind", type=click.Choice(["airy", "gaussian"]), default="airy",
              show_default=True)
@click.option("--psf-width", default=5.0, show_default=True,
              help="Airy first dark ring radius / 2·Gaussian sigma (px).")
@click.option("--filaments", default=8, show_default=True)
@click.option("--dots", default=25, show_default=True)
@click.option("--photons", default=400.0, show_default=True,
              help="Expected photon count at the brightest pixel (shot noise).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for observation.tif, psf.tif, truth.tif.")
def simulate(size, channels, psf_size, psf_kind, psf_width, filaments, dots, photons, seed, out):
    """Simulate a stack: OUT/observation.tif (c×S×S), psf.tif, truth.tif (c×(S+P−1)²)."""
    from ...data.io import write_image
    from ...errors import UserError
    from ...sim.spod import SPoDSimConfig
    from ...sim.spod import simulate as run

    if size < 1 or channels < 2 or psf_size < 1 or photons <= 0 or psf_width <= 0:
        raise UserError("need --size >= 1, --channels >= 2, --psf-size >= 1, positive "
                        "--photons and --psf-width")
    config = SPoDSimConfig(size=size, channels=channels, psf_size=psf_size, psf_kind=psf_kind,
                           psf_width=psf_width, n_filaments=filaments, n_dots=dots,
                           photons=photons)
    data = run(config, seed)
    for name, array in data.items():
        write_image(Path(out) / f"{name}.tif", array)
    click.echo(f"wrote {out}/observation.tif {data['observation'].shape}, psf.tif "
               f"{data['psf'].shape}, truth.tif {data['truth'].shape}")


@group.command()
@click.option("--data", "data_dirs", required=True, multiple=True,
              type=click.Path(file_okay=False),
              help="Folder(s) with observation.tif + psf.tif; repeat or list several.")
@click.argument("more_data", nargs=-1, type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint path.")
@click.option("--layers", default=10, show_default=True, help="Number of layers M.")
@click.option("--variant", type=click.Choice(["spodnet", "lista"]), default="spodnet",
              show_default=True)
@click.option("--threshold", type=click.Choice(["leaky", "nonneg"]), default="leaky",
              show_default=True, help="LST (eq. 11) or NST (eq. 7).")
@click.option("--alpha", default=0.1, show_default=True, help="LST leak alpha.")
@click.option("--loss", type=click.Choice(["unsupervised", "supervised"]),
              default="unsupervised", show_default=True,
              help="Eq. (9) (the objective) or eq. (8) (distance to FISTA solutions).")
@click.option("--lam", default=DEFAULT_LAM, show_default=True, help="λ of eq. (5).")
@click.option("--steps", default=40, show_default=True, help="Adam steps of Opt1 and of Opt2 "
              "per layer (the seed: 2500).")
@click.option("--lr", default=0.05, show_default=True,
              help="Opt1 learning rate η (Opt2: 0.2·η new layer, 0.02·η others); relative to "
              "each tensor's scale unless --absolute-lr.")
@click.option("--absolute-lr", is_flag=True, help="Plain Adam learning rates (the seed: 1e-4).")
@click.option("--gamma", default=0.3, show_default=True,
              help="Shrink factor of Algorithm 1 (1 = no shrink; the bundled model uses 1).")
@click.option("--crop", default=64, show_default=True, help="Training crop size (px).")
@click.option("--n-train", default=100, show_default=True, help="Augmented crops N.")
@click.option("--batch-size", default=4, show_default=True)
@click.option("--fista-iters", default=1000, show_default=True,
              help="FISTA iterations per supervised target.")
@click.option("--loss-on-output", is_flag=True,
              help="Take the loss on [x]_+ instead of the last iterate x^(M) (the bundled "
              "model's choice; with LST the default keeps gradients when outputs are zeroed).")
@click.option("--no-preprocess", is_flag=True, help="Skip median 5 + minimum 7 filtering.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same command.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if present).")
@click.option("--quiet", is_flag=True)
def train(data_dirs, more_data, out, layers, variant, threshold, alpha, loss, lam, steps, lr,
          absolute_lr, gamma, crop, n_train, batch_size, fista_iters, loss_on_output, no_preprocess,
          resume, seed, device, quiet):
    """Layer-wise training (Algorithm 1) of SPoD-Net or LISTA-Net on a few observations."""
    import numpy as np
    import torch

    from ...errors import UserError
    from ...utils import seed_everything
    from .data import load_directory, prepare
    from .train import LayerwiseConfig, build_model, train_layerwise

    if layers < 1 or steps < 1 or crop < 1 or n_train < 1 or batch_size < 1 or lam < 0:
        raise UserError("--layers, --steps, --crop, --n-train, --batch-size must be >= 1, "
                        "--lam >= 0")
    if not (0 < gamma <= 1) or lr <= 0:
        raise UserError("need 0 < --gamma <= 1 and --lr > 0")
    seed_everything(seed)
    loaded = [load_directory(d) for d in (*data_dirs, *more_data)]
    psfs = [p for _, p in loaded]
    if any(p.shape != psfs[0].shape for p in psfs):
        raise UserError("all PSFs must have the same size")
    if any(s.shape[0] != loaded[0][0].shape[0] for s, _ in loaded):
        raise UserError("all observations must have the same number of channels")
    psf = np.mean(psfs, axis=0).astype(np.float32)  # the seed averages the PSFs (Sec. 5)
    psf /= psf.sum()
    stacks = [prepare(s, psf, not no_preprocess).y for s, _ in loaded]
    model = build_model(variant, psf, stacks[0].shape[0], layers, threshold, lam, crop, alpha)
    model = model.to(torch.get_default_dtype())
    cfg = LayerwiseConfig(steps=steps, lr=lr, gamma=gamma, n_train=n_train,
                          batch_size=batch_size, crop=crop, loss=loss, fista_iters=fista_iters,
                          relative_lr=not absolute_lr, relaxed=not loss_on_output, seed=seed,
                          device=device, quiet=quiet)
    records = train_layerwise(
        model, psf, stacks, cfg, out, resume=resume,
        extra={"preprocessing": not no_preprocess, "data": [str(d) for d in data_dirs]},
    )
    last = records[-1]
    click.echo(f"saved {out}: {variant}, {layers} layers, {model.n_parameters()} parameters, "
               f"final training objective {last['loss_last']:.6g}")


@group.command()
@click.argument("observation", type=click.Path(dir_okay=False))
@click.option("--psf", required=True, type=click.Path(dir_okay=False))
@click.option("--model", default=None, help="Bundled model name (spodnet) or checkpoint path.")
@click.option("--method", type=click.Choice(["fista", "ista"]), default=None,
              help="Solve eq. (5) iteratively instead of using a model.")
@click.option("--iters", default=1000, show_default=True, help="Solver iterations.")
@click.option("--lam", default=None, type=float,
              help=f"λ of eq. (5) (default: the model's, else {DEFAULT_LAM}).")
@click.option("--no-preprocess", is_flag=True, help="Skip median 5 + minimum 7 filtering.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Recovered stack (TIFF, c×(H+a−1)×(W+b−1), float32).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--quiet", is_flag=True)
def predict(observation, psf, model, method, iters, lam, no_preprocess, out, device, quiet):
    """Recover a super-resolved stack; prints L(Y, x) of eq. (5) on the normalised stack."""
    from ...data.io import write_image
    from ...errors import UserError
    from ...models import load
    from ...models.spodnet import SPoDNet
    from ...utils import resolve_device
    from .data import read_psf, read_stack
    from .predict import recover_stack

    if (model is None) == (method is None):
        raise UserError("give exactly one of --model NAME|CKPT and --method fista|ista")
    if iters < 1:
        raise UserError("--iters must be >= 1")
    dev = resolve_device(device)
    stack, psf_array = read_stack(observation), read_psf(psf)
    net = None
    if model is not None:
        net, _ = load(model, device=dev, expected=SPoDNet)
        lam = net.config.lam if lam is None else lam
    lam = DEFAULT_LAM if lam is None else lam
    result = recover_stack(stack, psf_array, lam, model=net, method=method or "fista",
                           n_iter=iters, preprocessing=not no_preprocess, device=dev)
    write_image(out, result.x)
    click.echo(f"objective {result.objective:.6g} (eq. 5, lam {lam:g}); {result.seconds:.2f} s; "
               f"wrote {out} {result.x.shape}")


@group.command()
@click.option("--observation", required=True, type=click.Path(dir_okay=False))
@click.option("--psf", required=True, type=click.Path(dir_okay=False))
@click.option("--recovered", required=True, type=click.Path(dir_okay=False))
@click.option("--truth", default=None, type=click.Path(dir_okay=False),
              help="Ground truth (from simulate) for PSNR.")
@click.option("--lam", default=DEFAULT_LAM, show_default=True, help="λ of eq. (5).")
@click.option("--no-preprocess", is_flag=True, help="Skip median 5 + minimum 7 filtering.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Also write the JSON here.")
def evaluate(observation, psf, recovered, truth, lam, no_preprocess, out):
    """Objective L(Y, x) of eq. (5) of a recovered stack (and PSNR against a truth) as JSON."""
    import json

    from ...data.io import read_image, write_json
    from .data import read_psf, read_stack
    from .predict import evaluate_recovery

    stack = read_stack(observation)
    metrics = evaluate_recovery(
        stack, read_psf(psf), read_image(recovered), lam,
        truth=None if truth is None else read_image(truth), preprocessing=not no_preprocess,
    )
    if out:
        write_json(out, metrics)
    click.echo(json.dumps(metrics, indent=2))


@click.command()
@click.option("--quick", is_flag=True, help="Reduced protocol (about 10 min on 2 CPU cores).")
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--quiet", is_flag=True)
def bench(quick, json_path, seed, device, quiet):
    """SPoD-Net vs FISTA (quality, speed, size) and the seed's two ablations."""
    from .bench import run_benchmark

    run_benchmark(json_path, quick=quick, seed=seed, device=device, quiet=quiet)


def demo(out_dir: Path, quiet: bool = False) -> dict:
    """Bundled SPoD-Net vs FISTA on a simulated stack; figures in ``out_dir``."""
    from .demo import run_demo

    return run_demo(Path(out_dir), quiet=quiet)
