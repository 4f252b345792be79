"""``proxscope bench seg``: the shape of the seed's Tables 1-2 on simulated WBC phantoms.

Protocol (seed Sec. 4.1): UNet and RUNet trained on clean images (Table 1: UNet1/RUNet1) and
with a third of the training images noisy (Table 2: UNet2/RUNet2: Gaussian sigma 0.05 or 1 %
salt-and-pepper); tested on clean images, Gaussian sigma 0.01/0.03/0.05/0.07/0.09 and 1 %
salt-and-pepper: mIoU, global accuracy, RE (eq. 4.1), all ×100 as in the tables. Post-TV
baseline: UNet1 with a TV softmax of 100 iterations at test time only, lam picked from a grid
on validation images. Timing: TVSoftmax with 1 iteration vs softmax (the layer alone and a
whole UNet training step, measured interleaved in the same run) and the per-iteration cost at
evaluation.

Modes: quick (3-10 minutes on 2 shared cores: 24 training / 12 test images of 96², 300 Adam
steps on 64² crops) and full (about 30 minutes: 60 training / 40 test images as in the seed,
160², 1500 steps on 96² crops; the seed used 300² images and 20k SGD steps on a GPU).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ...benchmarking import median_time
from ...data.transforms import prepare_image
from ...layers.tv import tv_softmax
from ...metrics.segmentation import segmentation_report
from ...models.segmentation import build
from ...sim.segmentation import add_noise, simulate_dataset
from ...utils import resolve_device
from .predict import segment
from .train import fit_segmentation, nll_loss

CONDITIONS = [("clean", 0.0)] + [("gaussian", s) for s in (0.01, 0.03, 0.05, 0.07, 0.09)] + [
    ("salt_pepper", 0.01)
]
POST_TV_GRID = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
MODES = {
    "quick": {"n_train": 24, "n_val": 4, "n_test": 12, "size": 96, "steps": 300, "patch": 64},
    "full": {"n_train": 60, "n_val": 8, "n_test": 40, "size": 160, "steps": 1500, "patch": 96},
}


def _label(kind: str, level: float) -> str:
    return "clean" if kind == "clean" else f"{kind}_{level:g}"


def noisy_sets(images: np.ndarray, key: tuple[int, ...], conditions=CONDITIONS) -> dict[str, list]:
    """Prepared (normalised) images (N, H, W, 3) in [0, 1] per condition (kind, level); noise
    added on the [0, 1] scale, condition c drawn from the rng seeded by (*key, c)."""
    sets = {}
    for c, (kind, level) in enumerate(conditions):
        rng = np.random.default_rng([*key, c])
        sets[_label(kind, level)] = [prepare_image(add_noise(im, kind, level, rng)) for im in images]
    return sets


def score(model, sets, truths, post_tv_lam=None) -> dict[str, dict]:
    """mIoU / accuracy / RE (×100) per condition."""
    rows = {}
    for name, images in sets.items():
        preds = [segment(model, im, post_tv_lam=post_tv_lam).argmax(0) for im in images]
        r = segmentation_report(preds, truths)
        rows[name] = {"miou": 100 * r["miou"], "accuracy": 100 * r["accuracy"], "re": r["re"]}
    return rows


def pick_post_tv_lam(model, val_sets, val_truths) -> tuple[float, dict]:
    """The grid lam with the best mean validation mIoU over clean and sigma 0.05 images."""
    subset = {k: val_sets[k] for k in ("clean", "gaussian_0.05")}
    means = {
        lam: float(np.mean([r["miou"] for r in score(model, subset, val_truths, lam).values()]))
        for lam in POST_TV_GRID
    }
    return max(means, key=means.get), means


def goals(unet: dict, runet: dict, post_tv: dict | None) -> dict:
    """The issue's goals for one table, from rows of :func:`score`."""
    drop = {name: m["clean"]["miou"] - m["gaussian_0.09"]["miou"]
            for name, m in (("unet", unet), ("runet", runet))}
    out = {
        "clean_miou_gap_points": unet["clean"]["miou"] - runet["clean"]["miou"],
        "clean_miou_within_0.5_points": unet["clean"]["miou"] - runet["clean"]["miou"] <= 0.5,
        "miou_drop_at_0.09": drop,
        "runet_drop_at_most_half_of_unet": drop["runet"] <= 0.5 * drop["unet"],
        "runet_re_lower_everywhere": all(runet[k]["re"] < unet[k]["re"] for k in unet),
    }
    if post_tv is not None:
        out["runet_miou_above_post_tv_everywhere"] = all(
            runet[k]["miou"] > post_tv[k]["miou"] for k in runet
        )
        out["runet_mean_miou_minus_post_tv"] = float(
            np.mean([runet[k]["miou"] - post_tv[k]["miou"] for k in runet])
        )
    return out


def timing(device, repeats: int = 9) -> dict:
    """Seconds (median) of softmax vs TVSoftmax(1 iteration), interleaved in one run."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 3, 96, 96, generator=gen).to(device).requires_grad_(True)
    target = torch.randint(0, 3, (8, 96, 96), generator=gen).to(device)
    x = torch.randn(8, 3, 96, 96, generator=gen).to(device)

    def layer(n_iter):
        def run():
            probs = torch.softmax(logits, 1) if n_iter is None else tv_softmax(logits, 1.0, n_iter)
            nll_loss(probs, target).backward()
        return run

    def step(model):
        def run():
            model.zero_grad()
            nll_loss(model(x), target).backward()
        return run

    torch.manual_seed(0)
    unet, runet = build("unet").to(device).train(), build("runet").to(device).train()
    runet.load_state_dict(unet.state_dict(), strict=False)
    samples = {k: [] for k in ("softmax", "tv1", "unet_step", "runet_step")}
    for _ in range(3):  # interleave so a change of machine load hits both sides
        samples["softmax"].append(median_time(layer(None), repeats, warmup=1))
        samples["tv1"].append(median_time(layer(1), repeats, warmup=1))
        samples["unet_step"].append(median_time(step(unet), max(repeats // 5, 2), warmup=1))
        samples["runet_step"].append(median_time(step(runet), max(repeats // 5, 2), warmup=1))
    t = {k: float(np.median(v)) for k, v in samples.items()}
    big = torch.randn(1, 3, 256, 256, generator=gen).to(device)
    with torch.no_grad():
        t_soft = median_time(lambda: torch.softmax(big, 1), repeats, warmup=1)
        t_100 = median_time(lambda: tv_softmax(big, 1.0, 100), 3, warmup=1)
    return {
        "layer_forward_backward_s": {"softmax": t["softmax"], "tv_softmax_1_iter": t["tv1"],
                                     "shape": [8, 3, 96, 96]},
        "layer_time_ratio_tv1_vs_softmax": t["tv1"] / t["softmax"],
        "train_step_s": {"unet": t["unet_step"], "runet": t["runet_step"],
                         "batch": [8, 3, 96, 96]},
        "train_step_time_ratio_runet_vs_unet": t["runet_step"] / t["unet_step"],
        "eval_256x256x3": {"softmax_s": t_soft, "tv_softmax_100_iter_s": t_100,
                           "per_iteration_s": t_100 / 100,
                           "per_iteration_vs_softmax": t_100 / 100 / t_soft},
    }


def run_benchmark(quick: bool, seed: int = 0, device=None, quiet: bool = False) -> dict:
    """Train the four nets, score them on every noise condition, time the layer; returns the
    results (and prints :func:`format_tables` unless ``quiet``)."""
    p = MODES["quick" if quick else "full"]
    start = time.perf_counter()
    train_images, train_masks = simulate_dataset(p["n_train"], p["size"], seed)
    val_images, val_masks = simulate_dataset(p["n_val"], p["size"], seed + 1000)
    test_images, test_masks = simulate_dataset(p["n_test"], p["size"], seed + 2000)
    x = [prepare_image(im) for im in train_images]
    y = [m.astype(np.int64) for m in train_masks]
    test_sets, test_truths = noisy_sets(test_images, (seed, 11)), list(test_masks)
    val_sets, val_truths = noisy_sets(val_images, (seed + 1, 11)), list(val_masks)
    tables, lams, train_s = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for table, noisy in (("table1_clean_training", 0.0), ("table2_noisy_training", 1 / 3)):
            rows, models = {}, {}
            for arch in ("unet", "runet"):
                t0 = time.perf_counter()
                models[arch], _ = fit_segmentation(
                    x, y, arch, Path(tmp) / f"{arch}-{noisy:.2f}.safetensors", steps=p["steps"],
                    patch=p["patch"], noisy_fraction=noisy, seed=seed, device=device, quiet=quiet)
                train_s[f"{table}/{arch}"] = time.perf_counter() - t0
                rows[arch] = score(models[arch], test_sets, test_truths)
                if models[arch].tv is not None:
                    lams[f"{table}/{arch}"] = float(models[arch].tv.lam.detach())
            lam_post, lam_scores = pick_post_tv_lam(models["unet"], val_sets, val_truths)
            rows["unet_post_tv"] = score(models["unet"], test_sets, test_truths, lam_post)
            lams[f"{table}/post_tv"] = lam_post
            lams[f"{table}/post_tv_val_miou_by_lam"] = lam_scores
            tables[table] = {"rows": rows, "goals": goals(rows["unet"], rows["runet"],
                                                          rows["unet_post_tv"])}
    results = {
        "protocol": {**p, "conditions": [_label(*c) for c in CONDITIONS],
                     "noisy_training_fraction": 1 / 3, "train_noise": "gaussian 0.05 or s&p 1%",
                     "metrics": "mIoU, accuracy in %, RE eq. 4.1 (x100 /pixel)",
                     "seed": seed},
        "tables": tables,
        "lambda": lams,
        "train_seconds": train_s,
        "timing": timing(resolve_device(device)),
        "total_seconds": time.perf_counter() - start,
    }
    if not quiet:
        print(format_tables(results))
    return results


def format_tables(results: dict) -> str:
    """Markdown tables of the results (the layout of the seed's Tables 1-2)."""
    lines = []
    for table, content in results["tables"].items():
        rows = content["rows"]
        names = list(next(iter(rows.values())))
        lines.append(f"\n{table}\n\n| metric | model | " + " | ".join(names) + " |")
        lines.append("|---" * (len(names) + 2) + "|")
        for metric in ("miou", "accuracy", "re"):
            for model, row in rows.items():
                cells = " | ".join(f"{row[n][metric]:.2f}" for n in names)
                lines.append(f"| {metric} | {model} | {cells} |")
        lines.append("\ngoals: " + ", ".join(f"{k}={v}" for k, v in content["goals"].items()))
    t = results["timing"]
    lines.append(
        f"\nTVSoftmax(1 iter)/softmax layer fwd+bwd: {t['layer_time_ratio_tv1_vs_softmax']:.2f}x; "
        f"RUNet/UNet train step: {t['train_step_time_ratio_runet_vs_unet']:.3f}x; "
        f"eval per TV iteration (256²x3): {1e3 * t['eval_256x256x3']['per_iteration_s']:.2f} ms"
    )
    return "\n".join(lines)
