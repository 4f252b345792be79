"""Make the bundled seg weights: ``unet`` and ``runet`` trained on clean simulated WBC phantoms.

Seeded and deterministic on one machine (CPU float32):
    .venv/bin/python scripts/make_weights_seg.py [--steps 300] [--arch unet runet] [--quiet]
writes src/proxscope/weights/unet.safetensors and runet.safetensors (clean training = the
setting of the seed's Table 1, so the demo shows RUNet's robustness to test-time noise), with
the training masks' median object diameter (``object_diameter_px``, for ``--diameter``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from proxscope.data.transforms import prepare_image
from proxscope.models import WEIGHTS_DIR
from proxscope.sim.segmentation import simulate_dataset
from proxscope.tasks.seg.train import fit_segmentation

N_IMAGES, SIZE, SEED = 40, 128, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--arch", nargs="+", default=["unet", "runet"], choices=["unet", "runet"])
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    images, masks = simulate_dataset(N_IMAGES, SIZE, SEED)
    x = [prepare_image(im) for im in images]
    y = [m.astype(np.int64) for m in masks]
    for arch in args.arch:
        out = Path(WEIGHTS_DIR) / f"{arch}.safetensors"
        extra = {"data": f"simulated WBC phantoms: {N_IMAGES} images {SIZE}x{SIZE}, seed {SEED}",
                 "trained_on": "simulated brightfield blood-smear phantoms (RGB, clean): one "
                               "white blood cell per image among red cells",
                 "classes": ["background", "cytoplasm", "nucleus"],
                 "script": "scripts/make_weights_seg.py"}
        model, _ = fit_segmentation(x, y, arch, out, steps=args.steps, seed=SEED, quiet=args.quiet,
                                    device="cpu", extra=extra)
        resume = out.with_name(out.name + ".resume")
        resume.unlink(missing_ok=True)
        lam = f", lam {float(model.tv.lam.detach()):.3f}" if model.tv is not None else ""
        print(f"{out}: {out.stat().st_size / 1e3:.0f} kB{lam}")


if __name__ == "__main__":
    main()
