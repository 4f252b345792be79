"""``proxscope bench retina``: the shape of the seed's Tables 2-4 on simulated photographs.

1. nu sweep (Table 2): a net B per nu in {0, 1e-4, 1e-3, 1e-2}, trained on image labels only;
   test image-level AUC and mean lesion FROC of its hue-constrained heatmaps.
2. Criteria (Table 3): FROC per lesion type on the test set for sensitivity, hue-constrained
   sensitivity, LRP and Grad-CAM of the nu = 0 net, and hue-constrained sensitivity of the
   nu = 1e-3 net (sparsity-enhanced).
3. Ensemble (Table 4): a random forest on the scores of the nu = 1e-3 run's ensemble members
   (Sec. 5.6), fitted on the training + validation photographs; test AUC vs the single net.
4. Timings in one run: hue-constrained heatmap vs one forward + backward, vs occlusion; a
   training step with the sparsity penalty vs without.
Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.5-5.6, Tables 2-4.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ...benchmarking import median_time
from ...metrics.detection import LESION_NAMES
from .data import FundusSet, load_set
from .model import finite_or_none, score_and_heatmaps
from .train import RetinaTrainOptions, loss_fn, train, validation_scores

NUS = (0.0, 1e-4, 1e-3, 1e-2)
CRITERIA = {"sensitivity": ("hue_plain", "sensitivity"), "hue-constrained": ("hue_plain", "hue"),
            "hue-constrained + sparsity-enhanced": ("hue_sparse", "hue"), "LRP": ("hue_plain", "lrp"),
            "Grad-CAM": ("hue_plain", "gradcam")}


@dataclass
class BenchConfig:
    n_train: int
    n_val: int
    n_test: int
    photo: int  # simulated photograph side (px)
    size: int  # network canvas (FOV width, px)
    steps: int
    batch_size: int = 8
    val_every: int = 50
    lr: float = 1e-3


QUICK = BenchConfig(n_train=200, n_val=40, n_test=60, photo=384, size=256, steps=300)
FULL = BenchConfig(n_train=600, n_val=100, n_test=200, photo=512, size=256, steps=1500, val_every=100)


def _datasets(cfg: BenchConfig, seed: int, root: Path, quiet: bool) -> dict[str, FundusSet]:
    from ...sim.fundus import write_dataset

    sets = {}
    for offset, (name, n) in enumerate((("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test))):
        folder = write_dataset(root / name, n, cfg.photo, seed=1000 * seed + offset)
        sets[name] = load_set(folder / "images", folder / "labels.csv", folder / "lesions", cfg.size, quiet)
    return sets


def _scores(model, data: FundusSet, method: str = "hue") -> dict:
    """{"auc", "froc": {lesion type: area, "mean_froc"}} on a test set with lesion masks."""
    froc = validation_scores(model, data, method)
    return {"auc": froc.pop("auc"), "froc": froc}


def _ensemble_auc(members: list[Path], sets: dict[str, FundusSet], seed: int) -> dict:
    """Test AUC of a random forest on the members' scores (seed Sec. 5.6: n_T = 500, d_T = 25)."""
    from sklearn.ensemble import RandomForestClassifier

    from ...metrics.detection import roc_auc
    from ...models import load

    nets = [load(path)[0] for path in members]

    def features(data):
        return np.stack([score_and_heatmaps(net, data.images, None)[0] for net in nets], axis=1)

    fit_x = np.concatenate([features(sets["train"]), features(sets["val"])])
    fit_y = np.concatenate([sets["train"].labels, sets["val"].labels])
    forest = RandomForestClassifier(n_estimators=500, max_depth=25, random_state=seed).fit(fit_x, fit_y)
    return {"members": [p.stem for p in members],
            "auc": finite_or_none(roc_auc(sets["test"].labels,
                                          forest.predict_proba(features(sets["test"]))[:, 1]))}


def _timings(model, data: FundusSet, cfg: BenchConfig) -> dict:
    from ...explain import hue_constrained_sensitivity, occlusion

    model.eval()
    x = torch.from_numpy(data.images[: cfg.batch_size])
    one = x[:1]

    def forward_backward():
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg).sum(), xg)

    t_fb = median_time(forward_backward, repeats=5, warmup=1)
    t_hue = median_time(lambda: hue_constrained_sensitivity(model, x), repeats=5, warmup=1)
    t_hue_one = median_time(lambda: hue_constrained_sensitivity(model, one), repeats=5, warmup=1)
    t_occ_one = median_time(lambda: occlusion(model, one), repeats=1)
    model.train()
    y = torch.from_numpy(data.labels[: cfg.batch_size])
    steps = {}
    for nu in (0.0, 1e-3):
        loss = loss_fn(nu)

        def step(loss=loss):
            model.zero_grad()
            loss(model, (x, y)).backward()

        steps[nu] = median_time(step, repeats=5, warmup=1)
    model.eval()
    return {"batch": cfg.batch_size, "forward_backward_s": t_fb, "hue_heatmap_s": t_hue,
            "hue_vs_forward_backward": t_hue / t_fb, "occlusion_one_image_s": t_occ_one,
            "hue_one_image_s": t_hue_one, "occlusion_vs_hue": t_occ_one / t_hue_one,
            "train_step_plain_s": steps[0.0], "train_step_penalty_s": steps[1e-3],
            "penalty_step_ratio": steps[1e-3] / steps[0.0]}


def run_bench(quick: bool, seed: int = 0, device: str | None = None, quiet: bool = False) -> dict:
    from ...models import load

    cfg = QUICK if quick else FULL
    log = (lambda *a: None) if quiet else print
    start = time.perf_counter()
    results: dict = {"config": asdict(cfg), "lesion_types": list(LESION_NAMES.values())}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = _datasets(cfg, seed, root, quiet)
        results["data"] = {k: {"images": len(v.labels), "referable": int(v.labels.sum())}
                           for k, v in sets.items()}
        log(f"data: {results['data']} ({time.perf_counter() - start:.0f} s)")
        sweep, nets = {}, {}
        for nu in NUS:
            t0 = time.perf_counter()
            out = root / f"nu_{nu:g}.safetensors"
            options = RetinaTrainOptions(size=cfg.size, nu=nu, steps=cfg.steps, lr=cfg.lr,
                                         batch_size=cfg.batch_size, val_every=cfg.val_every,
                                         seed=seed, device=device, quiet=quiet)
            summary = train(sets["train"], sets["val"], out, options)
            nets[nu] = load(out)[0]
            sweep[f"{nu:g}"] = _scores(nets[nu], sets["test"]) | {
                "train_s": time.perf_counter() - t0, "val_best": summary["best"]}
            log(f"nu={nu:g}: {sweep[f'{nu:g}']}")
        results["nu_sweep"] = sweep
        chosen = {"hue_plain": nets[0.0], "hue_sparse": nets[1e-3]}
        results["criteria"] = {
            name: _scores(chosen[net], sets["test"], method)["froc"]
            for name, (net, method) in CRITERIA.items()
        }
        log(f"criteria: {results['criteria']}")
        members = sorted((root / "nu_0.001.safetensors.ensemble").glob("*.safetensors"))
        results["ensemble"] = _ensemble_auc(members, sets, seed) | {"single_auc": sweep["0.001"]["auc"]}
        log(f"ensemble: {results['ensemble']}")
        results["timing"] = _timings(nets[1e-3], sets["test"], cfg)
    results["goals"] = _goals(results)
    results["bench_wall_s"] = time.perf_counter() - start
    return results


def _goals(r: dict) -> dict:
    """The issue's goals, each True/False on the measured numbers."""
    sweep, crit = r["nu_sweep"], r["criteria"]
    mean = {nu: s["froc"]["mean_froc"] or 0.0 for nu, s in sweep.items()}
    types = list(LESION_NAMES.values())
    sparse, hue, sens = (crit[k] for k in ("hue-constrained + sparsity-enhanced", "hue-constrained",
                                           "sensitivity"))
    return {
        "auc_at_1e-3_ge_0.90": (sweep["0.001"]["auc"] or 0) >= 0.90,
        "froc_rises_0_to_1e-3": mean["0.001"] > mean["0"],
        "froc_collapses_at_1e-2": mean["0.01"] < mean["0.001"],
        "sparse_gt_hue_gt_sensitivity_every_type": all(
            (sparse[t] or 0) > (hue[t] or 0) > (sens[t] or 0) for t in types),
        "sparse_gt_lrp_every_type": all((sparse[t] or 0) > (crit["LRP"][t] or 0) for t in types),
        "ensemble_ge_single": (r["ensemble"]["auc"] or 0) >= (r["ensemble"]["single_auc"] or 0),
        "hue_le_1.5x_forward_backward": r["timing"]["hue_vs_forward_backward"] <= 1.5,
        "hue_ge_100x_faster_than_occlusion": r["timing"]["occlusion_vs_hue"] >= 100,
    }
