"""``proxscope bench cells``: the seed's comparisons on held-out simulated images.

1. Detection (seed Tables 2-7): CNNCS, ECNNCS-1 and ECNNCS-2 trained with the same data, steps
   and seed, plus a Laplacian-of-Gaussian blob detector (threshold chosen for the best F1 on the
   training images) as the plain baseline; pooled P/R/F1 on test images with rho = 4 px (the
   smallest simulated target radius is 3.5 px, seed Sec. 4.2).
2. Backward of the recovery layer: SparseRecovery (ISTA forward, batch rule eqs. 8-9) against
   autograd through the same T ISTA iterations, gradients w.r.t. the codes and D; wall times of
   the forward and of the backward pass (medians of repeats, same process, same inputs) and the
   bytes autograd keeps for the backward (saved tensors), for several T.

Quick mode: 8 training / 3 validation / 20 test images of 256², 480 steps of 16 patches per
variant (60 passes over the training images). Full mode: 24 / 6 / 20 images, 4,800 steps.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ...benchmarking import median_time
from ...metrics import match_points, pool_matches
from ...models.cnncs import VARIANTS, CNNCSConfig
from ...sim.cells import simulate
from .detect import detect, prepare
from .task import RADIUS
from .train import train


def _dataset(n: int, seed: int) -> list[dict]:
    return [
        {"name": f"s{seed}_{i}", "raw": image, "image": prepare(image, 64), "points": pts}
        for i, (image, pts) in enumerate(simulate(n, 256, seed))
    ]


def _pooled(preds: list[np.ndarray], data: list[dict]) -> dict[str, float]:
    matches = [match_points(p, d["points"], RADIUS) for p, d in zip(preds, data, strict=True)]
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
    L lines, m = 32, n = 91: the bundled model's sizes). The backward is timed on one graph
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


def run(quick: bool = True, seed: int = 0, device: str | None = None, quiet: bool = False) -> dict:
    """Run the benchmark; returns the results (written by the CLI with machine information)."""
    n_train, n_val, n_test, steps = (8, 3, 20, 480) if quick else (24, 6, 20, 4800)
    train_data = _dataset(n_train, seed * 10 + 1)
    val_data = _dataset(n_val, seed * 10 + 2)
    test_data = _dataset(n_test, seed * 10 + 3)
    results: dict = {
        "protocol": {
            "train_images": n_train,
            "val_images": n_val,
            "test_images": n_test,
            "image_size": 256,
            "steps": steps,
            "batch_size": 16,
            "radius": RADIUS,
            "test_cells": int(sum(len(d["points"]) for d in test_data)),
            "seed": seed,
        },
        "detection": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            start = time.perf_counter()
            model, extra = train(
                train_data, Path(tmp) / f"{variant}.safetensors", variant, CNNCSConfig(),
                steps=steps, seed=seed, device=device, quiet=quiet, val_data=val_data,
            )
            seconds = time.perf_counter() - start
            model, vote_threshold = model.cpu(), extra["detection"]["vote_threshold"]
            preds = [detect(model, d["raw"], vote_threshold)[0] for d in test_data]
            results["detection"][variant] = {
                **_pooled(preds, test_data),
                "train_seconds": seconds,
                "steps": extra["steps"],
                "vote_threshold": vote_threshold,
                "val_f1": extra["val_f1"],
            }
    results["detection"]["log_baseline"] = log_baseline(train_data, test_data)
    results["sparse_recovery_backward"] = backward_speed(seed=seed)
    det = results["detection"]
    t100 = next(r for r in results["sparse_recovery_backward"]["rows"] if r["T"] == 100)
    rule_bytes = {r["rule_saved_bytes"] for r in results["sparse_recovery_backward"]["rows"]}
    results["goals"] = {
        "ecnncs2_ge_ecnncs1_ge_cnncs": det["ecnncs2"]["f1"] >= det["ecnncs1"]["f1"]
        >= det["cnncs"]["f1"],
        "ecnncs2_f1_minus_cnncs_f1": det["ecnncs2"]["f1"] - det["cnncs"]["f1"],
        "ecnncs2_beats_cnncs_by_0.02": det["ecnncs2"]["f1"] >= det["cnncs"]["f1"] + 0.02,
        "backward_speedup_T100": t100["backward_speedup"],
        "backward_speedup_ge_5": t100["backward_speedup"] >= 5,
        "forward_plus_backward_speedup_T100": t100["total_speedup"],
        "rule_memory_independent_of_T": len(rule_bytes) == 1,
    }
    return results
