"""Train the bundled ``cnncs`` weights: ECNNCS-2 on simulated images (seeded, CPU, minutes).

    python scripts/make_weights_cells.py [--out src/proxscope/weights/cnncs.safetensors]

12 training images (seed 101) and 3 validation images (seed 102) of 256² from
``proxscope.sim.cells``; the default model config (30 FISTA iterations in the recovery, D at
0.1 × the CNN's learning rate, alpha = 0.2, ±1-bin decoding; alpha = 1 trained markedly worse
in the quick benchmark, see benchmarks/cells.md); 1200 steps (100 passes over the images) of 16
64² patches, Adam 2e-3, seed 0. The vote threshold is calibrated on the validation images.
"""

from __future__ import annotations

import argparse

import torch

from proxscope.models.cnncs import CNNCSConfig
from proxscope.sim.cells import simulate
from proxscope.tasks.cells.detect import prepare
from proxscope.tasks.cells.train import train


def dataset(n: int, seed: int) -> list[dict]:
    return [
        {"name": f"sim{seed}_{i}", "image": prepare(image, 64), "points": points}
        for i, (image, points) in enumerate(simulate(n, 256, seed))
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="src/proxscope/weights/cnncs.safetensors")
    parser.add_argument("--steps", type=int, default=1200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _, extra = train(
        dataset(12, 101), args.out, "ecnncs2", CNNCSConfig(), steps=args.steps, seed=0,
        device="cpu", quiet=True, val_data=dataset(3, 102),
    )
    print(f"{args.out}: steps {extra['steps']}, validation F1 {extra['val_f1']:.3f}, "
          f"vote threshold {extra['detection']['vote_threshold']}")


if __name__ == "__main__":
    main()
