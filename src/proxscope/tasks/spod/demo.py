"""``proxscope demo`` section for SPoD: the bundled SPoD-Net vs FISTA on a simulated stack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..base import DemoResult

FISTA_ITERS = 300


def orientation_rgb(x: np.ndarray) -> np.ndarray:
    """(c, H, W) -> (H, W, 3): hue = intensity-weighted mean orientation (channel k ↔ kπ/c,
    averaged on the doubled angle), value = total intensity (99.5th percentile = 1)."""
    from matplotlib.colors import hsv_to_rgb

    c = x.shape[0]
    angle = 2 * np.pi * np.arange(c) / c
    total = x.sum(0)
    vec = (x * np.exp(1j * angle)[:, None, None]).sum(0)
    hue = (np.angle(vec) % (2 * np.pi)) / (2 * np.pi)
    value = np.clip(total / max(np.percentile(total, 99.5), 1e-12), 0, 1)
    return hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], -1))


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def run_demo(out_dir: Path) -> DemoResult:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...models import load
    from ...operators.spod import SPoDConv, lam_max, noise_lam, psf_kernel, spod_objective
    from ...report import save_figure
    from ...sim.spod import SPoDSimConfig, simulate
    from .data import prepare
    from .metrics import fidelity, field_of_view
    from .recover import predict_model, solve

    model, _ = load("spodnet")
    data = simulate(SPoDSimConfig(size=128), seed=2024)
    kernel, truth = psf_kernel(data["psf"]), data["truth"]
    prepared = prepare(data["observation"])
    y = torch.from_numpy(prepared.y)[None]
    op = SPoDConv.from_psf(torch.from_numpy(kernel), y.shape[1])
    lam = noise_lam(op, y, prepared.sigma)  # what `spod predict --method fista` uses
    with torch.no_grad():
        x_net = predict_model(model, y)
        net_obj = float(spod_objective(op, x_net, y, lam)[0])
    run = solve(op, y, lam, "fista", n_iter=FISTA_ITERS)
    fista_curve = run.objective[:, 0].numpy()
    reached = np.nonzero(fista_curve <= net_obj)[0]
    x_net_np = x_net[0].numpy() * prepared.scale
    x_fista = run.x[0].numpy() * prepared.scale
    scores = {name: fidelity(x, truth, kernel.shape)
              for name, x in (("SPoD-Net", x_net_np), ("FISTA", x_fista))}

    (r0, c0), side = field_of_view(kernel.shape), y.shape[-1]
    fov = (slice(None), slice(r0, r0 + side), slice(c0, c0 + side))

    def caption(name):
        sc = scores[name]
        return (f"PSNR {_fmt(sc['psnr_db'])} dB, dot F1 {_fmt(sc['dot_f1'])},\n"
                f"{_fmt(100 * sc['within_2px'] if sc['within_2px'] is not None else None)} % "
                f"within 2 px, orientation err. {_fmt(sc['orientation_error_deg'])}°")

    fig, axes = plt.subplots(1, 4, figsize=(17, 5))
    panels = [
        (data["observation"].sum(0), "observation (sum of 18 polarizations)"),
        (orientation_rgb(truth[fov]), "truth (hue = orientation), field of view"),
        (orientation_rgb(x_fista[fov]), f"FISTA, {FISTA_ITERS} iterations\n" + caption("FISTA")),
        (orientation_rgb(x_net_np[fov]), f"SPoD-Net, {model.config.n_layers} layers\n"
         + caption("SPoD-Net")),
    ]
    for ax, (image, title) in zip(axes, panels, strict=True):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    figures = [save_figure(fig, out_dir / "spod_recovery.png", dpi=90)]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(np.arange(1, len(fista_curve) + 1), fista_curve, label="FISTA (line search)")
    ax.axhline(net_obj, color="C3", linestyle="--", label="SPoD-Net (one forward pass)")
    ax.set_xlabel("FISTA iteration")
    ax.set_ylabel("objective L(Y, x), eq. (5)")
    ax.legend()
    fig.tight_layout()
    figures.append(save_figure(fig, out_dir / "spod_objective.png", dpi=90))
    metrics = {
        "λ (noise rule) / λ_max": f"{lam:.4g} / {lam / lam_max(op, y):.4f}",
        "SPoD-Net objective": net_obj,
        f"FISTA objective after {FISTA_ITERS} iterations": float(fista_curve[-1]),
        "FISTA iterations to reach SPoD-Net": int(reached[0]) + 1 if len(reached) else
        f"> {FISTA_ITERS}",
        "all-zero image: blurred PSNR (dB)": scores["FISTA"]["psnr_zero_db"],
    }
    for name, sc in scores.items():
        metrics |= {
            f"{name}: blurred PSNR (dB) / correlation": f"{_fmt(sc['psnr_db'])} / "
            f"{_fmt(sc['correlation'])}",
            f"{name}: dot F1 at 2 px ({sc['dots_true']} dots)": sc["dot_f1"],
            f"{name}: intensity within 2 px of a structure": sc["within_2px"],
            f"{name}: orientation error (°)": sc["orientation_error_deg"],
        }
    return DemoResult(
        title="SPoD: super-resolution recovery of a polarization stack (SPoD-Net vs FISTA)",
        text="A simulated 18-channel SPoD stack (filaments and dots, Airy PSF 32x32, flat "
        "background, shot noise), background removed, recovered by the bundled 10-layer "
        "SPoD-Net and by FISTA with line search on eq. (5) at the noise-scaled λ. Colours show "
        "the recovered dipole orientation; images and scores cover the field of view (the "
        "recovery without its 15-px border, which the observation sees only in part).",
        metrics=metrics,
        figures=figures,
    )
