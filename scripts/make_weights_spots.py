"""Make the bundled spots weights (seeded): src/proxscope/weights/{spotnet,convnet}.safetensors.

Simulates 10 FluoroSpot images (512×512, 1250 cells, noise level 3, seeds 1000-1009: 7 for
training, 3 for validation, as in the SpotNet paper Sec. 4) and trains each model on random
64×64 crops with Adam (batch 1, the recipe of :data:`proxscope.tasks.spots.train.RECIPES`),
keeping the best validation model. At 1 CPU thread: spotnet 20,000 steps ~25 min, convnet
8,000 steps ~10 min (benchmarks/spots.md has the training trajectories).

    python scripts/make_weights_spots.py [--models spotnet,convnet] [--steps-spotnet N]
        [--steps-convnet N] [--data DIR] [--calibrate-only]

The detection threshold is fitted (best mean per-image F1) on the 3 validation images plus 4
sparser ones (250 and 750 cells, seeds 1010-1013): a threshold fitted on crowded wells alone
keeps too many weak peaks on sparse ones. --calibrate-only keeps the weights and only refits the
threshold (after a change of the detection rule).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from proxscope.checkpoint import read_checkpoint, update_extra
from proxscope.sim.fluorospot import FluoroSpotConfig
from proxscope.tasks.spots.simulate import simulate_dirs
from proxscope.tasks.spots.train import calibrate, load_set, train

WEIGHTS = Path(__file__).resolve().parent.parent / "src" / "proxscope" / "weights"
SEEDS = list(range(1000, 1010))
SPARSE = {250: [1010, 1011], 750: [1012, 1013]}  # extra calibration wells: cells -> seeds
VAL_EVERY = {"spotnet": 600, "convnet": 400}


def keep_validation_history(path: Path) -> None:
    """Drop the per-step training losses from the checkpoint (they would make the bundled
    file ~0.5 MB); keep the validation records, the trajectory benchmarks/spots.md reports."""
    history = read_checkpoint(path).extra.get("history", [])
    update_extra(path, history=[h for h in history if "val" in h])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="spotnet,convnet")
    parser.add_argument("--steps-spotnet", type=int, default=20000)
    parser.add_argument("--steps-convnet", type=int, default=8000)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--data", type=Path, default=None, help="keep the simulated data here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS)
    parser.add_argument("--calibrate-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp)
        folders = simulate_dirs(FluoroSpotConfig(), SEEDS, root)
        calibration = folders[7:] + [f for n, seeds in SPARSE.items() for f in
                                     simulate_dirs(FluoroSpotConfig(n_cells=n), seeds, root)]
        steps_of = {"spotnet": args.steps_spotnet, "convnet": args.steps_convnet}
        for name in args.models.split(","):
            if args.calibrate_only:
                threshold, val_f1 = calibrate(args.out_dir / f"{name}.safetensors",
                                              load_set(calibration))
                print(json.dumps({name: {"threshold": threshold, "val_f1": val_f1}}))
                continue
            steps = steps_of[name]
            summary = train(
                name, folders[:7], args.out_dir / f"{name}.safetensors", val=folders[7:],
                steps=steps, crop=args.crop, val_every=VAL_EVERY[name], seed=0, quiet=True,
            )
            (args.out_dir / f"{name}.safetensors.resume").unlink(missing_ok=True)
            keep_validation_history(args.out_dir / f"{name}.safetensors")
            summary["threshold"], summary["val_f1"] = calibrate(
                args.out_dir / f"{name}.safetensors", load_set(calibration))
            print(json.dumps({name: summary}))


if __name__ == "__main__":
    main()
