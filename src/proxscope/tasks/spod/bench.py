"""``proxscope bench spod``: SPoD-Net vs FISTA and the seed's two ablations.

1. Quality: the bundled SPoD-Net (M = 10, LST) on held-out simulated stacks vs FISTA with
   backtracking after ``fista_iters`` iterations (seed Sec. 5.2: 10,000): ratio of eq. (5)
   objectives, mean and worst; and fidelity to the truth on the field of view
   (:mod:`.metrics`: blurred PSNR next to the all-zero image's, correlation, dot F1 at 2 px,
   intensity within 2 px, orientation error) of SPoD-Net, of the full FISTA run and of FISTA
   stopped at the net's cost (as many iterations as fit in the net's time).
2. Speed, measured in the same run on one thread: SPoD-Net forward time per stack vs the time
   FISTA needs to reach the SPoD-Net's objective on that stack (iterations to reach it × the
   measured untracked time per FISTA iteration), vs the time FISTA needs to reach the net's
   fidelity (dot F1 and intensity within 2 px both at least the net's), and vs the full run.
3. Size: parameters and file size of SPoD-Net and of LISTA-Net with the same M.
4. Ablations (seed Sec. 5.1, Fig. 6), with the seed's training protocol (absolute Adam
   learning rates, γ = 0.3) on few observations: SPoD-LST vs LISTA-LST at lr 1e-4 (test
   objective after each layer: LISTA-Net overfits); SPoD-NST vs SPoD-LST at Opt1 lr 1e-4, 1e-3
   (the seed's) and 1e-2 (training loss and all-zero outputs per stage: NST stalls). 1e-2 is
   added because our parameters have other scales than the seed's (PSF of sum 1, normalised
   stacks), so the lr at which signals get zeroed out shifts.

Everything runs on the CPU (the seed's timing setting) unless ``device`` names another.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...benchmarking import median_time
from ...checkpoint import save_checkpoint
from ...models import load, resolve
from ...models.spodnet import ARCHITECTURES, LISTANet, SPoDNet, SPoDNetConfig
from ...operators.spod import SPoDConv, psf_kernel, spod_objective
from ...sim.spod import SPoDSimConfig, simulate
from .data import prepare
from .metrics import fidelity
from .recover import solve
from .train import SpodTraining, train_spod


@dataclass
class BenchConfig:
    n_test: int
    test_size: int
    fista_iters: int
    ablation_layers: int
    ablation_steps: int
    ablation_train_obs: int
    ablation_n_train: int


QUICK = BenchConfig(n_test=4, test_size=64, fista_iters=2000, ablation_layers=3,
                    ablation_steps=30, ablation_train_obs=1, ablation_n_train=20)
FULL = BenchConfig(n_test=12, test_size=64, fista_iters=10_000, ablation_layers=5,
                   ablation_steps=100, ablation_train_obs=2, ablation_n_train=100)


@dataclass
class TestSet:
    """y (n, c, S, S) prepared patches; truth (n, c, S+P−1, S+P−1); scale (n,): the stack scale
    s of each patch (recovery × s is in the truth's units)."""

    y: torch.Tensor
    truth: np.ndarray
    scale: np.ndarray


def _test_set(cfg: BenchConfig) -> TestSet:
    """n_test held-out observations: as in the seed (Sec. 5.2), each held-out stack of
    2·test_size px is preprocessed and normalised, then split into 4 patches without overlap
    (with the matching part of the truth)."""
    size, crops, truths, scales = cfg.test_size, [], [], []
    for i in range(-(-cfg.n_test // 4)):
        sim = simulate(SPoDSimConfig(size=2 * size), seed=900 + i)
        prepared = prepare(sim["observation"])
        a = sim["psf"].shape[0]
        for r in (0, size):
            for c in (0, size):
                crops.append(prepared.y[:, r:r + size, c:c + size])
                truths.append(sim["truth"][:, r:r + size + a - 1, c:c + size + a - 1])
                scales.append(prepared.scale)
    n = cfg.n_test
    return TestSet(torch.from_numpy(np.ascontiguousarray(np.stack(crops[:n]))),
                   np.stack(truths[:n]), np.array(scales[:n]))


#: FISTA iterations at which the fidelity is scored (to find where it reaches the net's).
REPORT_ITERS = (1, 3, 10, 30, 100, 300, 1000)
FIDELITY_ITERS = sorted({int(round(1.25**i)) for i in range(60)} | set(REPORT_ITERS))
FIDELITY_KEYS = ("psnr_db", "psnr_zero_db", "correlation", "dot_f1", "within_2px",
                 "orientation_error_deg")


def _fidelity(x: torch.Tensor, test: TestSet, psf_shape) -> list[dict]:
    out = x.detach().cpu().numpy() * test.scale[:, None, None, None]
    scores = [fidelity(xi, ti, psf_shape) for xi, ti in zip(out, test.truth, strict=True)]
    return [{k: sc[k] for k in FIDELITY_KEYS} for sc in scores]


def _mean(scores: list[dict]) -> dict:
    return {k: float(np.mean([s[k] for s in scores if s[k] is not None]))
            if any(s[k] is not None for s in scores) else None for k in FIDELITY_KEYS}


def _reaches(score: dict, target: dict) -> bool:
    return all((score[k] or 0.0) >= (target[k] or 0.0) for k in ("dot_f1", "within_2px"))


def quality_and_speed(model: SPoDNet, op: SPoDConv, test: TestSet, cfg: BenchConfig,
                      log) -> dict:
    lam, y = model.config.lam, test.y
    psf_shape = op.kernel_shape

    def net_once():
        model(y[:1])
        if y.is_cuda:
            torch.cuda.synchronize()

    with torch.no_grad():
        x_net = model(y)
        net_obj = spod_objective(op, x_net, y, lam).cpu()
        t_net = median_time(net_once)
    net_fid = _fidelity(x_net, test, psf_shape)
    log(f"SPoD-Net objectives {net_obj.tolist()} ({t_net:.3f} s per stack)")
    n_probe = 200
    t_iter = solve(op, y[:1], lam, "fista", n_iter=n_probe, track=False).time[-1] / n_probe
    k_cost = max(1, round(t_net / t_iter))
    snapshots: dict[int, torch.Tensor] = {}

    def keep(k, x):
        if k in FIDELITY_ITERS or k == k_cost:
            snapshots[k] = x.detach().clone()

    start = time.perf_counter()
    run = solve(op, y, lam, "fista", n_iter=cfg.fista_iters, callback=keep)
    log(f"FISTA {cfg.fista_iters} iterations on {len(y)} stacks: {time.perf_counter() - start:.0f} s")
    objective = run.objective.cpu()
    fista_obj = objective[-1]
    fista_fid = _fidelity(run.x, test, psf_shape)
    cost_fid = _fidelity(snapshots[min(k_cost, cfg.fista_iters)], test, psf_shape)
    curve = {k: _fidelity(snapshots[k], test, psf_shape)
             for k in sorted(snapshots) if k in FIDELITY_ITERS and k <= cfg.fista_iters}
    per_stack = []
    for i in range(len(y)):
        reached = (objective[:, i] <= net_obj[i]).nonzero()
        k = int(reached[0]) + 1 if len(reached) else None
        t_fista = (k if k is not None else cfg.fista_iters) * t_iter
        k_fid = next((kk for kk, sc in curve.items() if _reaches(sc[i], net_fid[i])), None)
        t_fid = (k_fid if k_fid is not None else cfg.fista_iters) * t_iter
        per_stack.append({
            "net_objective": float(net_obj[i]), "fista_objective": float(fista_obj[i]),
            "ratio": float(net_obj[i] / fista_obj[i]),
            "fista_iters_to_reach_net": k, "fista_seconds_to_reach_net": t_fista,
            "speedup_to_same_objective": t_fista / t_net,
            "speedup_is_lower_bound": k is None,
            "fista_iters_to_reach_net_fidelity": k_fid,
            "speedup_to_same_fidelity": t_fid / t_net,
            "net_fidelity": net_fid[i], "fista_fidelity": fista_fid[i],
            "fista_at_net_cost_fidelity": cost_fid[i],
        })
    ratios = [s["ratio"] for s in per_stack]
    speedups = [s["speedup_to_same_objective"] for s in per_stack]
    fid_speedups = [s["speedup_to_same_fidelity"] for s in per_stack]
    checkpoints = {str(k): float((objective[k - 1] / fista_obj).mean())
                   for k in (10, 30, 100, 300, 1000) if k <= cfg.fista_iters}
    net_mean, fista_mean = _mean(net_fid), _mean(fista_fid)
    return {
        "lam": lam, "test_stacks": len(y), "test_size_px": list(y.shape[-2:]),
        "fista_iters": cfg.fista_iters,
        "objective_ratio_mean": float(np.mean(ratios)),
        "objective_ratio_worst": float(np.max(ratios)),
        "within_5_percent": bool(np.max(ratios) <= 1.05),
        "fista_mean_ratio_after_k_iters": checkpoints,
        "fidelity": {
            "spodnet": net_mean, f"fista_{cfg.fista_iters}": fista_mean,
            f"fista_at_net_cost_{k_cost}_iters": _mean(cost_fid),
            "fista_after_k_iters": {str(k): _mean(sc) for k, sc in curve.items()
                                    if k in REPORT_ITERS},
            "spodnet_minus_fista_dot_f1": net_mean["dot_f1"] - fista_mean["dot_f1"],
            "spodnet_minus_fista_within_2px": net_mean["within_2px"] - fista_mean["within_2px"],
        },
        "spodnet_seconds_per_stack": t_net,
        "fista_seconds_per_iteration": t_iter,
        "fista_seconds_full_run_per_stack": t_iter * cfg.fista_iters,
        "speedup_to_same_objective_median": float(np.median(speedups)),
        "speedup_to_same_objective_min": float(np.min(speedups)),
        "speedup_to_same_fidelity_median": float(np.median(fid_speedups)),
        "speedup_to_same_fidelity_min": float(np.min(fid_speedups)),
        "speedup_vs_full_fista_run": t_iter * cfg.fista_iters / t_net,
        "per_stack": per_stack,
    }


def sizes(model_name: str) -> dict:
    spod, _ = load(model_name)
    lista = LISTANet(SPoDNetConfig(**{**spod.config.__dict__}))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lista.safetensors"
        save_checkpoint(path, lista)
        lista_bytes = path.stat().st_size
    return {
        "spodnet_parameters": spod.n_parameters(),
        "spodnet_file_bytes": resolve(model_name).stat().st_size,
        "lista_parameters": lista.n_parameters(),
        "lista_file_bytes": lista_bytes,
        "layers": spod.config.n_layers,
    }


def _train(architecture, prox, lr, psf, stacks, op, y_test, cfg: BenchConfig, seed, lam, log) -> dict:
    model = ARCHITECTURES[architecture].from_solver(torch.from_numpy(psf), channels=stacks[0].shape[0],
                                     n_layers=cfg.ablation_layers, prox=prox, lam=lam,
                                     tile=cfg.test_size)

    def on_stage(m, phase, net):
        with torch.no_grad():
            x = net(y_test, n_layers=m)
            return {"test_objective": float(spod_objective(op, x, y_test, lam).mean()),
                    "zero_fraction": float((x == 0).float().mean())}

    # The seed's protocol: absolute Adam learning rates, γ = 0.3.
    train_cfg = SpodTraining(steps=cfg.ablation_steps, lr=lr, gamma=0.3, batch_size=4,
                             crop=cfg.test_size, n_train=cfg.ablation_n_train, seed=seed,
                             relative_lr=False, device=str(y_test.device), quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        records = train_spod(model, psf, stacks, train_cfg, Path(tmp) / "m.safetensors",
                             on_stage=on_stage)
    name = f"{architecture}-{'LST' if prox == 'leaky' else 'NST'}-lr{lr:g}"
    log(f"{name}: {time.perf_counter() - start:.0f} s, test objective "
        f"{records[-1]['test_objective']:.5g}")
    stages = [{
        "layer": r["layer"], "phase": r["phase"], "train_loss_first": r["loss_first"],
        "train_loss_last": r["loss_last"],
        "train_loss_rel_decrease": 1 - r["loss_last"] / r["loss_first"],
        "test_objective": r["test_objective"], "zero_fraction": r["zero_fraction"],
    } for r in records]
    return {"name": name, "parameters": model.n_parameters(), "stages": stages,
            "final_test_objective": records[-1]["test_objective"],
            "zero_output_stages": sum(r["zero_fraction"] == 1.0 for r in records),
            "train_seconds": time.perf_counter() - start}


def ablations(psf, op, y_test, cfg: BenchConfig, seed, lam, log) -> dict:
    sims = [simulate(SPoDSimConfig(size=2 * cfg.test_size), seed=500 + i)
            for i in range(cfg.ablation_train_obs)]
    stacks = [prepare(s["observation"]).y for s in sims]
    runs = [("spodnet", "leaky", 1e-4), ("lista", "leaky", 1e-4), ("spodnet", "nonneg", 1e-3),
            ("spodnet", "nonneg", 1e-4), ("spodnet", "leaky", 1e-3), ("spodnet", "nonneg", 1e-2),
            ("spodnet", "leaky", 1e-2)]
    results = [_train(*run, psf, stacks, op, y_test, cfg, seed, lam, log) for run in runs]
    by_name = {r["name"]: r for r in results}
    zero = torch.zeros_like(op.adjoint(y_test))  # the stalled nets' output
    spod, lista = by_name["spodnet-LST-lr0.0001"], by_name["lista-LST-lr0.0001"]
    return {
        "train_observations": cfg.ablation_train_obs, "train_crops": cfg.ablation_n_train,
        "layers": cfg.ablation_layers, "steps_per_optimizer": cfg.ablation_steps,
        "lista_test_objective_over_spodnet": lista["final_test_objective"]
        / spod["final_test_objective"],
        "test_objective_of_zero_output": float(spod_objective(op, zero, y_test, lam).mean()),
        "runs": results,
    }


def run_bench(quick: bool, seed: int, device: str | None, quiet: bool,
              model_name: str = "spodnet") -> dict:
    """Run the benchmark (see the module docstring); returns the results."""
    import click

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = QUICK if quick else FULL
    dev = torch.device(device or "cpu")

    def log(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    model, extra = load(model_name, device=dev)
    psf = psf_kernel(simulate(SPoDSimConfig(size=1), seed=0)["psf"])
    test = _test_set(cfg)
    test.y = test.y.to(dev)
    y = test.y
    op = SPoDConv.from_psf(torch.from_numpy(psf), y.shape[1]).to(dev)
    start = time.perf_counter()
    results = {
        "protocol": {**cfg.__dict__, "model": model_name, "model_training": extra.get("train"),
                     "note": "test: 4 patches of each held-out stack (simulate seeds 900..), "
                     "default PSF, background preprocessing, λ of the bundled model (noise "
                     "rule); bundled model trained on seeds 100-105; ablation training: "
                     "seeds 500.."},
        "quality_speed": quality_and_speed(model, op, test, cfg, log),
        "size": sizes(model_name),
        "ablations": ablations(psf, op, y, cfg, seed, model.config.lam, log),
        "threads": torch.get_num_threads(),
        "load_avg_end": os.getloadavg()[0],
    }
    results["seconds"] = time.perf_counter() - start
    return results
