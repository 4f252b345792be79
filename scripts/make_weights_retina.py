"""Make the bundled retina weights: net B trained on simulated fundus photographs with
image-level referral labels only — ``retina`` with the sparsity penalty (nu = 1e-3, seed eq. 6)
and ``retina-plain`` without (nu = 0), the pair the demo's heatmaps compare.

Seeded and deterministic on one machine (CPU float32); resumable (rerun with --resume):
    .venv/bin/python scripts/make_weights_retina.py [--steps 1500] [--n-images 600] [--only retina]
writes src/proxscope/weights/retina.safetensors and retina-plain.safetensors (each the best
validation-AUC net; the ensemble members are left in the work folder).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from proxscope.models import WEIGHTS_DIR
from proxscope.sim.fundus import write_dataset
from proxscope.tasks.retina.data import load_set, split
from proxscope.tasks.retina.train import RetinaTrainOptions, train

SEED, PHOTO, SIZE = 0, 512, 256
NETS = {"retina": 1e-3, "retina-plain": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--n-images", type=int, default=600)
    parser.add_argument("--work", default="out/make_weights_retina", help="Data and checkpoints.")
    parser.add_argument("--only", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    data_dir = work / "data"
    if not (data_dir / "labels.csv").is_file():
        write_dataset(data_dir, args.n_images, PHOTO, SEED)
    data = load_set(data_dir / "images", data_dir / "labels.csv", data_dir / "lesions", SIZE, args.quiet)
    train_index, val_index = split(len(data.labels), 0.2, SEED)
    for name in args.only:
        out = work / f"{name}.safetensors"
        options = RetinaTrainOptions(size=SIZE, nu=NETS[name], steps=args.steps, seed=SEED,
                                     device="cpu", quiet=args.quiet)
        summary = train(data.subset(train_index), data.subset(val_index), out, options, resume=args.resume)
        shutil.copyfile(out, Path(WEIGHTS_DIR) / f"{name}.safetensors")
        print(f"{name}: {summary}")


if __name__ == "__main__":
    main()
