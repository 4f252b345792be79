"""Train the bundled SPoD-Net (src/proxscope/weights/spodnet.safetensors), seeded.

Data: 6 simulated 160×160 stacks (seeds 100..105) with the simulator's default PSF (Airy, 32×32,
18 channels), prepared as ``proxscope spod predict`` does (hot pixels, background subtraction,
99.9th-percentile scale; PSF in the convolution convention); Algorithm 1 with LST (alpha 0.1),
M = 10, unsupervised loss (eq. 9) on the post-thresholded output, 64-px crops, relative
learning rate 0.05 and γ = 1 (no shrink; with a short CPU schedule the seed's γ = 0.3 made the
test objective worse, see benchmarks/spod.md). λ is the noise rule of ``spod predict``
(:func:`~proxscope.operators.spod.noise_lam`: 4·σ·||a_col||, the median over the training
stacks) for 64-px tiles. ``--steps`` Adam steps per optimizer (the seed: 2,500; the default 300
takes about 20 min on 1 thread of a 2-core CPU).

    .venv/bin/python scripts/make_weights_spod.py [--steps 300] [--out PATH] [--resume]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from proxscope.models.spodnet import SPoDNet
from proxscope.operators.spod import psf_kernel
from proxscope.sim.spod import SPoDSimConfig, simulate
from proxscope.tasks.spod.data import prepare
from proxscope.tasks.spod.train import SpodTraining, rule_lam, train_spod

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src/proxscope/weights/spodnet.safetensors"
CROP, LAYERS, CHANNELS = 64, 10, 18


def training_stacks(n: int = 6, size: int = 160) -> tuple[list, np.ndarray]:
    """Prepared training stacks and the correlation kernel of the default PSF."""
    sims = [simulate(SPoDSimConfig(size=size), seed=100 + i) for i in range(n)]
    return [prepare(s["observation"]) for s in sims], psf_kernel(sims[0]["psf"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    prepared, kernel = training_stacks()
    lam, lam_core = rule_lam(prepared, kernel, CROP)
    model = SPoDNet.from_solver(torch.from_numpy(kernel), channels=CHANNELS, n_layers=LAYERS,
                                prox="leaky", lam=lam, tile=CROP)
    cfg = SpodTraining(steps=args.steps, lr=args.lr, gamma=args.gamma, batch_size=args.batch_size,
                       crop=CROP, n_train=100, seed=0, relaxed=False, device="cpu", quiet=True)
    start = time.perf_counter()
    records = train_spod(
        model, kernel, [p.y for p in prepared], cfg, args.out, resume=args.resume,
        extra={"made_by": "scripts/make_weights_spod.py", "data": "simulate seeds 100-105, "
               "160 px, default PSF", "preprocessing": "background", "lam_core": lam_core},
    )
    print(f"λ {lam:.5g} (core {lam_core:.5g}); trained in {time.perf_counter() - start:.0f} s; "
          f"final loss {records[-1]['loss_last']:.6g}; {args.out} {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
