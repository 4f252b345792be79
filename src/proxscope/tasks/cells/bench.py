"""``proxscope bench cells``: the seed's comparisons on held-out simulated images.

1. Detection (seed Tables 2-7): CNNCS, ECNNCS-1, ECNNCS-2 (D learned) and ECNNCS-2 with D
   frozen, each trained with 3 seeds (training/validation images and initialisation from the
   seed; best checkpoint by validation F1), plus a Laplacian-of-Gaussian blob detector
   (threshold chosen for the best F1 on the training images) as the plain baseline; pooled
   P/R/F1 on 20 fixed test images with rho = 4 px (the smallest simulated target radius is
   3.5 px, seed Sec. 4.2), mean ± sd over the seeds.
1b. Own data at object radii 3, 6 and 12 px (:func:`own_data`), and the batch rule's gradient
   against the exact rule's at m = 32 and 112 (:func:`rule_cosines`).
2. Backward of the recovery layer: SparseRecovery (ISTA forward, batch rule eqs. 8-9) against
   autograd through the same T ISTA iterations, gradients w.r.t. the codes and D; wall times of
   the forward and of the backward pass (medians of repeats, same process, same inputs) and the
   bytes autograd keeps for the backward (saved tensors), for several T.

Quick mode: 8 training / 3 validation / 20 test images of 256², 480 steps of 16 patches per
variant (60 passes over the training images); own data: 4 / 2 / 4 images per radius, 480
steps. Full mode: 24 / 6 / 20 images, 4,800 steps.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ...benchmarking import median_time
from ...metrics import match_points, pool_matches
from ...models.cnncs import CNNCSConfig
from ...sim.cells import simulate
from .detect import detect, prepare
from .task import RADIUS
from .train import train


def _dataset(n: int, seed: int) -> list[dict]:
    return [
        {"name": f"s{seed}_{i}", "raw": image, "image": prepare(image, 64)[0], "points": pts}
        for i, (image, pts) in enumerate(simulate(n, 256, seed))
    ]


def _pooled(preds: list[np.ndarray], data: list[dict], radius: float = RADIUS) -> dict[str, float]:
    matches = [match_points(p, d["points"], radius) for p, d in zip(preds, data, strict=True)]
    return pool_matches(matches).as_dict()


def log_baseline(train_data: list[dict], test_data: list[dict]) -> dict:
    """LoG blobs (skimage) with sigma for radii 3.5-6 px; threshold tuned on ``train_data``."""
    from skimage.feature import blob_log

    def blobs(d, threshold):
        return blob_log(d["image"][0], min_sigma=2.5, max_sigma=4.5, num_sigma=5,
                        threshold=threshold)[:, :2]

    grid = [0.02, 0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3]
    scores = [_pooled([blobs(d, t) for d in train_data], train_data)["f1"] for t in grid]
    threshold = grid[int(np.argmax(scores))]
    return {**_pooled([blobs(d, threshold) for d in test_data], test_data), "threshold": threshold}


def _saved_bytes(fn) -> tuple[object, int]:
    """Run ``fn`` and count the bytes of the tensors autograd saves for the backward."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def backward_speed(n_iters=(25, 50, 100, 200), repeats: int = 5, seed: int = 0) -> dict:
    """SparseRecovery (batch rule) vs autograd through T ISTA iterations (codes of 16 patches ×
    L lines, m = 112, n = 91: the bundled model's sizes). The backward is timed on one graph
    (``retain_graph``), the forward with the graph built, each as a median of ``repeats``."""
    from ...layers.sparse_recovery import lasso_solver, lasso_step, sparse_recovery
    from ...prox import nonneg_soft_threshold

    gen = torch.Generator().manual_seed(seed)
    cfg = CNNCSConfig()
    n = 91
    D0 = torch.randn(cfg.m, n, generator=gen) / cfg.m**0.5
    a_true = (torch.rand(16 * cfg.n_lines, n, generator=gen) < 0.03).float()
    x0 = a_true @ D0.T + 0.05 * torch.randn(16 * cfg.n_lines, cfg.m, generator=gen)

    def unrolled(x, D, T):
        step = lasso_step(D)
        a = torch.zeros(x.shape[0], n)
        for _ in range(T):
            a = nonneg_soft_threshold(a - step * ((a @ D.T - x) @ D), step * cfg.lam)
        return a

    rows = []
    for T in n_iters:
        solver = lasso_solver("none", T)
        record = {"T": T}
        grads = {}
        for name, forward in (
            ("rule", lambda x, D, s=solver: sparse_recovery(x, D, cfg.lam, s, "batch")),
            ("autograd", lambda x, D, T=T: unrolled(x, D, T)),
        ):
            x, D = x0.clone().requires_grad_(True), D0.clone().requires_grad_(True)
            a, saved = _saved_bytes(lambda x=x, D=D, f=forward: f(x, D))
            loss = (a - a_true).abs().sum()
            record[f"{name}_forward_seconds"] = median_time(lambda x=x, D=D, f=forward: f(x, D),
                                                            repeats)
            record[f"{name}_backward_seconds"] = median_time(
                lambda x=x, D=D, loss=loss: torch.autograd.grad(loss, (x, D), retain_graph=True),
                repeats,
            )
            record[f"{name}_saved_bytes"] = saved
            grads[name] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, (x, D))])
        record["backward_speedup"] = (
            record["autograd_backward_seconds"] / record["rule_backward_seconds"]
        )
        record["total_speedup"] = (
            record["autograd_forward_seconds"] + record["autograd_backward_seconds"]
        ) / (record["rule_forward_seconds"] + record["rule_backward_seconds"])
        record["memory_ratio"] = record["autograd_saved_bytes"] / record["rule_saved_bytes"]
        record["grad_cosine"] = float(
            torch.nn.functional.cosine_similarity(grads["rule"], grads["autograd"], dim=0)
        )
        rows.append(record)
    return {"rows": rows, "codes": 16 * cfg.n_lines, "m": cfg.m, "n": n, "repeats": repeats}


def rule_cosines(ms=(32, 112), n: int = 91, k: int = 8, seed: int = 0) -> dict:
    """Cosine between the batch rule (8)-(9) and the exact rule (5)-(7) gradients (codes and D
    together) on converged lassos with Gaussian D (m, n), k cells per code, 128 codes: how far
    the batch rule's premise D^T D(p, p) ≈ I holds at each code length m."""
    from ...layers.sparse_recovery import lasso_solver, sparse_recovery

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for m in ms:
        D0 = torch.randn(m, n, generator=gen, dtype=torch.float64) / m**0.5
        a_true = torch.zeros(128, n, dtype=torch.float64)
        for row in a_true:
            row[torch.randperm(n, generator=gen)[:k]] = 1.0
        x0 = a_true @ D0.T + 0.05 * torch.randn(128, m, generator=gen, dtype=torch.float64)
        grads = []
        for rule in ("batch", "exact"):
            x, D = x0.clone().requires_grad_(True), D0.clone().requires_grad_(True)
            a = sparse_recovery(x, D, 0.1, lasso_solver("fista", 500), rule)
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(
                (a - a_true).abs().sum(), (x, D))]))
        out[str(m)] = float(torch.nn.functional.cosine_similarity(*grads, dim=0))
    return out


#: the detection comparison: name -> (variant, config changes)
METHODS = {
    "cnncs": ("cnncs", {}),
    "ecnncs1": ("ecnncs1", {}),
    "ecnncs2": ("ecnncs2", {}),
    "ecnncs2_frozen_d": ("ecnncs2", {"learn_matrix": False}),
}


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1
            else 0.0, "values": [float(v) for v in values]}


def compare_variants(seeds, n_train, n_val, test_data, steps, device, quiet, tmp) -> dict:
    """Every method of ``METHODS`` trained with each seed (training images, validation images
    and initialisation all drawn from the seed; best checkpoint by validation F1) and scored
    on ``test_data`` -> per method: per-seed results and mean ± sd of P/R/F1."""
    runs: dict[str, list[dict]] = {name: [] for name in METHODS}
    for seed in seeds:
        train_data = _dataset(n_train, seed * 10 + 1)
        val_data = _dataset(n_val, seed * 10 + 2)
        for name, (variant, changes) in METHODS.items():
            start = time.perf_counter()
            model, extra = train(
                train_data, Path(tmp) / f"{name}.safetensors", variant,
                dataclasses.replace(CNNCSConfig(), **changes), steps=steps, seed=seed,
                device=device, quiet=quiet, val_data=val_data,
            )
            seconds = time.perf_counter() - start
            model, vote_threshold = model.cpu(), extra["detection"]["vote_threshold"]
            preds = [detect(model, d["raw"], vote_threshold)[0] for d in test_data]
            runs[name].append({**_pooled(preds, test_data, RADIUS), "seed": seed,
                               "train_seconds": seconds, "vote_threshold": vote_threshold,
                               "val_f1": extra["val_f1"]})
    return {name: {"runs": r, **{k: _mean_sd([x[k] for x in r]) for k in
                                 ("precision", "recall", "f1", "val_f1")}}
            for name, r in runs.items()}


def own_data(radii, n_train, n_val, n_test, steps, seed, device, quiet, tmp) -> dict:
    """The own-data workflow at each object radius r (simulated images with every length ×
    r/4.75 and size 256·r/4.75): ``cells train``'s path (object size estimated from the
    annotations, images resampled to the model's scale, default ECNNCS-2) and prediction on
    held-out images at their own scale; matches within rho = r. Also the bundled model on the
    same test images with and without ``--diameter`` (the estimate)."""
    from ...sim.cells import CellSimConfig
    from .detect import DATA_DIAMETER_KEY, load_detector
    from .train import estimate_diameter, to_model_scale

    bundled, bundled_threshold, _ = load_detector("cnncs", "cpu")
    results = {}
    for r in radii:
        cfg = CellSimConfig(scale=r / 4.75)
        size = round(256 * cfg.scale)

        def sim(n, s, cfg=cfg, size=size, r=r):
            return [{"name": f"r{r}_{s}_{i}", "raw": image, "points": points, "channels": 1}
                    for i, (image, points) in enumerate(simulate(n, size, s, cfg))]

        train_raw, val_raw, test = sim(n_train, seed * 10 + 4), sim(n_val, seed * 10 + 5), sim(
            n_test, seed * 10 + 6)
        diameter = estimate_diameter(train_raw)
        config = CNNCSConfig()
        model, extra = train(
            to_model_scale(train_raw, config, diameter), Path(tmp) / f"r{r}.safetensors",
            "ecnncs2", config, steps=steps, seed=seed, device=device, quiet=quiet,
            val_data=to_model_scale(val_raw, config, diameter), data_diameter=diameter,
        )
        model = model.cpu()
        threshold = extra["detection"]["vote_threshold"]
        trained = [detect(model, d["raw"], threshold, diameter=extra[DATA_DIAMETER_KEY])[0]
                   for d in test]
        plain = [detect(bundled, d["raw"], bundled_threshold)[0] for d in test]
        scaled = [detect(bundled, d["raw"], bundled_threshold, diameter=diameter)[0] for d in test]
        results[str(r)] = {
            "image_size": size, "test_cells": int(sum(len(d["points"]) for d in test)),
            "estimated_diameter": diameter, "rho": r,
            "own_training": {**_pooled(trained, test, r), "val_f1": extra["val_f1"]},
            "bundled_without_diameter": _pooled(plain, test, r),
            "bundled_with_diameter": _pooled(scaled, test, r),
        }
    return results


def run(quick: bool = True, seed: int = 0, device: str | None = None, quiet: bool = False) -> dict:
    """Run the benchmark; returns the results (written by the CLI with machine information)."""
    n_train, n_val, n_test, steps = (8, 3, 20, 480) if quick else (24, 6, 20, 4800)
    seeds = [seed, seed + 1, seed + 2]
    test_data = _dataset(n_test, 3)
    results: dict = {
        "protocol": {
            "train_images": n_train, "val_images": n_val, "test_images": n_test,
            "image_size": 256, "steps": steps, "batch_size": 16, "radius": RADIUS,
            "test_cells": int(sum(len(d["points"]) for d in test_data)), "seeds": seeds,
            "m": CNNCSConfig().m, "n_lines": CNNCSConfig().n_lines,
            "checkpoint": "best validation F1 (10 validations)",
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        det = compare_variants(seeds, n_train, n_val, test_data, steps, device, quiet, tmp)
        results["detection"] = det
        results["own_data"] = own_data((3, 6, 12), 4, 2, 4, steps, seed, device, quiet, tmp)
    results["detection"]["log_baseline"] = log_baseline(_dataset(n_train, seed * 10 + 1), test_data)
    results["sparse_recovery_backward"] = backward_speed(seed=seed)
    results["batch_vs_exact_rule_cosine"] = rule_cosines(seed=seed)
    f1 = {name: det[name]["f1"]["mean"] for name in METHODS}
    t100 = next(r for r in results["sparse_recovery_backward"]["rows"] if r["T"] == 100)
    rule_bytes = {r["rule_saved_bytes"] for r in results["sparse_recovery_backward"]["rows"]}
    results["goals"] = {
        "ecnncs2_ge_ecnncs1_ge_cnncs": f1["ecnncs2"] >= f1["ecnncs1"] >= f1["cnncs"],
        "ecnncs2_f1_minus_cnncs_f1": f1["ecnncs2"] - f1["cnncs"],
        "ecnncs2_beats_cnncs_by_0.02": f1["ecnncs2"] >= f1["cnncs"] + 0.02,
        "own_data_f1_ge_0.85_every_radius": all(
            r["own_training"]["f1"] >= 0.85 for r in results["own_data"].values()),
        "backward_speedup_T100": t100["backward_speedup"],
        "backward_speedup_ge_5": t100["backward_speedup"] >= 5,
        "forward_plus_backward_speedup_T100": t100["total_speedup"],
        "rule_memory_independent_of_T": len(rule_bytes) == 1,
    }
    return results
