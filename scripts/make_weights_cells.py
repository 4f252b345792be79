"""Train the bundled ``cnncs`` weights: ECNNCS-2 on simulated images (seeded, CPU, minutes).

    python scripts/make_weights_cells.py [--out src/proxscope/weights/cnncs.safetensors]

12 training images (seed 101) and 3 validation images (seed 102) of 256² from
``proxscope.sim.cells`` (target radius 3.5-6 px: the network's scale, ``config.diameter`` =
10.8 px); the default model config (m = 112 codes per line, 30 FISTA iterations in the
recovery, D learned from the L1 term at 0.1 × the CNN's learning rate with its column norms
held, alpha = 0.2, ±1-bin decoding); 1200 steps (100 passes over the images) of 16 64²
patches, Adam 2e-3, seed 0; the checkpoint with the best validation F1 is kept, with its vote
threshold. The checkpoint records its object scale and training data (``trained_on``).
"""

from __future__ import annotations

import argparse

import torch

from proxscope.checkpoint import update_extra
from proxscope.models.cnncs import CNNCSConfig
from proxscope.sim.cells import simulate
from proxscope.tasks.cells.detect import prepare
from proxscope.tasks.cells.task import BUNDLED
from proxscope.tasks.cells.train import train


def dataset(n: int, seed: int) -> list[dict]:
    return [
        {"name": f"sim{seed}_{i}", "image": prepare(image, 64)[0], "points": points}
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
    update_extra(args.out, trained_on=BUNDLED)
    print(f"{args.out}: steps {extra['steps']}, validation F1 {extra['val_f1']:.3f}, "
          f"vote threshold {extra['detection']['vote_threshold']}")


if __name__ == "__main__":
    main()
