"""``proxscope bench spots``: the SpotNet paper's Sec. 4 protocol.

Test set: simulated 512×512 images at noise level 3 with 250, 750 and 1250 cells (full: 50 per
group as in the paper; quick: 3 per group), never seen in training. Models trained on 1250-cell
images only: quick mode uses the bundled weights (scripts/make_weights_spots.py: 7 training +
3 validation images); full mode retrains both models on fresh images with ``FULL_STEPS`` steps.
Per image: the MSE loss (3) on the simulator's x scale (and as a fraction of the all-zero
output's), the best F1 over thresholds (the paper's protocol) and the F1 at the threshold fixed
on validation images, matching radius 3 px, and the error of the per-cell secretion profiles
(relative L2 ||p̂ − p|| / ||p|| of each cell matched at the fixed threshold; p̂ = the 3×3 sum of
the output around the detection, on the simulator's x scale; median over the image's cells).
APG (true 403×403 kernels, FFT) runs ``n_iter`` iterations on one 1250-cell image; its F1 is
recorded along the way to find the time APG needs to reach SpotNet's F1 (the speed ratio,
measured in the same run).
Seed: spotnet-fluorospot-learned-iterations.txt Sec. 4, Figs. 3-4.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .evaluate import RADIUS, score_image
from .predict import DETECT_SIGMA, detect, infer, load_model, normalize, profiles

GROUPS = (250, 750, 1250)
TEST_SEED = 5000
TRAIN_SEED = 2000
FULL_STEPS = {"spotnet": 20000, "convnet": 8000}  # the bundled recipe (make_weights_spots.py)
FULL_CROP = 64
APG_ITER = {"quick": 200, "full": 1000}  # 10^4 iterations: ~3.9 h on one CPU thread
APG_LAM = 10.0  # image units (0..255); chosen on a validation image, see benchmarks/spots.md


def run_apg(image, kernels, lam: float, n_iter: int, score_at, score_fn, device="cpu"):
    """APG (Nesterov) for eq. (2) with the true observation kernels (K, kh, kw) on one image,
    constant step 1/L with L the spectral bound of ``FFTConv.lipschitz``.

    score_at: iteration numbers where ``score_fn(x (K, H, W)) -> dict`` is recorded with the
    solver time so far (scoring time excluded). Returns the list of records."""
    import torch

    from ...operators import FFTConv
    from ...prox import nonneg_group_soft_threshold
    from ...solvers import apg

    op = FFTConv(torch.from_numpy(kernels).float()).to(device)
    y = torch.from_numpy(image)[None, None].to(device)
    step = 1.0 / op.lipschitz((len(kernels), *image.shape), bound=True)
    records, excluded = [], [0.0]
    start = time.perf_counter()

    def callback(k, x):
        if k in score_at:
            t0 = time.perf_counter()
            records.append({"iter": k, "time_s": t0 - start - excluded[0],
                            **score_fn(x[0].cpu().numpy())})
            excluded[0] += time.perf_counter() - t0

    apg(op, y, lam, nonneg_group_soft_threshold, n_iter=n_iter, tol=0.0, step=step, track=False,
        callback=callback)
    return records


def _timed(model, image, device, repeats: int):
    """(output (K, H, W), median seconds of ``repeats`` forward passes)."""
    from ...benchmarking import median_time

    outputs = []
    seconds = median_time(lambda: outputs.append(infer(model, image, device)), repeats)
    return outputs[-1], seconds


def profile_errors(out: np.ndarray, gain: float, yx: np.ndarray, sample) -> np.ndarray:
    """Relative L2 error of the profiles of the detections ``yx`` matched (RADIUS) to true
    cells: ||p̂ − p||₂ / ||p||₂ with p̂ = :func:`profiles` of ``out`` (normalised units) / gain
    and p = the cell's x (``sample.secretion``) -> (n_matched,)."""
    from ...metrics import match_points

    pairs = match_points(yx, sample.cells_yx, RADIUS).pairs
    if len(pairs) == 0:
        return np.zeros(0)
    estimate = profiles(out, yx[pairs[:, 0]]) / gain
    truth = sample.secretion[pairs[:, 1]]
    return np.linalg.norm(estimate - truth, axis=1) / np.linalg.norm(truth, axis=1)


def _median_or_none(values) -> float | None:
    """Median of the values that are not None; None when there are none (valid JSON)."""
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _iqr(values) -> float:
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1)


def _training_record(summary: dict) -> dict:
    """The JSON record of a model's training from :func:`.train.history_summary` keys plus
    threshold and val_f1 (validation losses are MSE / all-zero-output MSE)."""
    return {"best_val_loss_vs_zero": summary["best_val_loss"],
            **{key: summary[key] for key in ("best_step", "val_history", "restored_at",
                                              "threshold", "val_f1")}}


def _bundled_training(name: str) -> dict:
    """:func:`_training_record` of the bundled checkpoint ``name`` (its history runs to the
    best step)."""
    from ...checkpoint import read_checkpoint
    from ...models import resolve
    from .train import history_summary

    extra = read_checkpoint(resolve(name)).extra
    return _training_record({**history_summary(extra.get("history", [])),
                             "threshold": extra.get("detection", {}).get("threshold"),
                             "val_f1": extra.get("val_f1")})


def _models(quick: bool, seed: int, device, quiet: bool, root: Path):
    """{'spotnet': (model, detection settings), 'convnet': ...}, a description of their
    training (quick: the bundled weights; full: retrained in ``root``) and each model's
    :func:`_training_record`."""
    from ...sim.fluorospot import FluoroSpotConfig
    from .simulate import simulate_dirs
    from .train import MODELS, train

    if quick:
        return ({name: load_model(name, device)[:2] for name in MODELS},
                "bundled weights (scripts/make_weights_spots.py)",
                {name: _bundled_training(name) for name in MODELS})
    folders = simulate_dirs(FluoroSpotConfig(), list(range(TRAIN_SEED, TRAIN_SEED + 10)), root)
    training = {}
    for name in MODELS:
        summary = train(name, folders[:7], root / f"{name}.safetensors", val=folders[7:],
                        steps=FULL_STEPS[name], crop=FULL_CROP, val_every=FULL_STEPS[name] // 40,
                        seed=seed, device=device, quiet=quiet)
        training[name] = _training_record(summary)  # the whole run's history
    steps = ", ".join(f"{name} {n} steps" for name, n in FULL_STEPS.items())
    return ({name: load_model(root / f"{name}.safetensors", device)[:2] for name in MODELS},
            f"retrained: 7 train + 3 val images, {steps}, {FULL_CROP}x{FULL_CROP} crops",
            training)


def run_bench(quick: bool, seed: int = 0, device=None, quiet: bool = False) -> dict:
    """Run the benchmark (see the module docstring) -> the results dict."""
    import tempfile

    import torch
    from tqdm.auto import tqdm

    from ...models.spotnet import secretion_loss
    from ...sim import fluorospot as fs
    from ...utils import resolve_device

    device = resolve_device(device)
    n_test = 3 if quick else 50
    total_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        models, trained, training = _models(quick, seed, device, quiet, Path(tmp))
    base = fs.FluoroSpotConfig()
    kernels, operator = fs.make_kernels(base), fs.codes_operator(base)
    per_image, apg_case = [], None
    bar = tqdm(total=n_test * len(GROUPS), disable=quiet, desc="test images")
    for group in GROUPS:
        config = fs.FluoroSpotConfig(n_cells=group)
        for i in range(n_test):
            image_seed = TEST_SEED + group * 100 + i
            sample = fs.simulate(config, np.random.default_rng(image_seed), kernels, operator)
            row = {"cells": group, "seed": image_seed}
            image, gain = normalize(sample.image)
            zero_loss = float(np.mean(sample.target.astype(np.float64) ** 2))
            for name, (model, detection) in models.items():
                out, seconds = _timed(model, image, device, repeats=1 if i else 3)
                yx, scores = detect(out, sigma=detection["sigma"])
                scored = score_image(yx, scores, sample.cells_yx, detection["threshold"])
                loss = float(secretion_loss(torch.from_numpy(out / gain),
                                            torch.from_numpy(sample.target)))
                errors = profile_errors(out, gain, yx[scores >= detection["threshold"]], sample)
                row[name] = {"loss": loss, "loss_vs_zero": loss / zero_loss,
                             "best_f1": scored["best_f1"], "f1_fixed": scored["f1"],
                             "precision_fixed": scored["precision"],
                             "recall_fixed": scored["recall"],
                             "profile_rel_l2": _median_or_none(errors),
                             "time_s": seconds}
            per_image.append(row)
            if group == GROUPS[-1] and apg_case is None:
                apg_case = sample
            bar.update(1)
    bar.close()

    summary = {}
    for group in GROUPS:
        rows = [r for r in per_image if r["cells"] == group]
        summary[str(group)] = {
            name: {
                "median_best_f1": float(np.median([r[name]["best_f1"] for r in rows])),
                "iqr_best_f1": _iqr([r[name]["best_f1"] for r in rows]),
                "median_f1_fixed": float(np.median([r[name]["f1_fixed"] for r in rows])),
                "median_loss": float(np.median([r[name]["loss"] for r in rows])),
                "iqr_loss": _iqr([r[name]["loss"] for r in rows]),
                "median_loss_vs_zero": float(np.median([r[name]["loss_vs_zero"] for r in rows])),
                "median_profile_rel_l2": _median_or_none(
                    [r[name]["profile_rel_l2"] for r in rows]),
            }
            for name in models
        }
    spot_better = [r["spotnet"]["loss"] < r["convnet"]["loss"] for r in per_image]
    spot_f1_better = [r["spotnet"]["best_f1"] > r["convnet"]["best_f1"] for r in per_image]
    median_time_s = {name: float(np.median([r[name]["time_s"] for r in per_image]))
                     for name in models}

    # APG on the first 1250-cell test image, scored along the way.
    n_iter = APG_ITER["quick" if quick else "full"]
    score_at = sorted({int(v) for v in np.unique(np.geomspace(10, n_iter, 16).round())})
    full_kernels = fs.observation_kernels(kernels, fs.make_blur(base)).astype(np.float32)

    def score_fn(x):
        yx, scores = detect(x)
        return {"best_f1": score_image(yx, scores, apg_case.cells_yx, np.inf)["best_f1"]}

    apg_records = run_apg(apg_case.image, full_kernels, APG_LAM, n_iter, set(score_at), score_fn,
                          device)
    spot_row = next(r for r in per_image if r["cells"] == GROUPS[-1])
    spot_f1, spot_t = spot_row["spotnet"]["best_f1"], spot_row["spotnet"]["time_s"]
    reached = [r for r in apg_records if r["best_f1"] >= spot_f1]
    apg_result = {
        "lam": APG_LAM,
        "n_iter": n_iter,
        "kernel_size": list(full_kernels.shape[1:]),
        "records": apg_records,
        "spotnet_best_f1_same_image": spot_f1,
        "spotnet_time_s_same_image": spot_t,
        "apg_reached_spotnet_f1": bool(reached),
        # Reached: time to equal F1 / SpotNet time. Not reached: a lower bound (total APG time).
        "speed_ratio_to_equal_f1": (reached[0] if reached else apg_records[-1])["time_s"] / spot_t,
        "speed_ratio_is_lower_bound": not reached,
    }
    return {
        "protocol": {
            "image_size": 512, "noise_level": 3, "groups": list(GROUPS),
            "test_images_per_group": n_test, "matching_radius_px": RADIUS,
            "models": trained, "device": str(device),
            "detection": "peak_local_max (3x3) of the LoG-sharpened temporal mean, "
                         f"sigma {DETECT_SIGMA:g} px",
        },
        "training": training,
        "per_group": summary,
        "spotnet_loss_lower_than_convnet_fraction": float(np.mean(spot_better)),
        "spotnet_best_f1_above_convnet_fraction": float(np.mean(spot_f1_better)),
        "median_time_s": median_time_s,
        "apg": apg_result,
        "per_image": per_image,
        "bench_wall_s": time.perf_counter() - total_start,
    }
