"""Training SpotNet / ConvNet on simulated folders (Seed: spotnet-fluorospot-learned-iterations.txt
Sec. 4: Adam, batch 1, MSE loss (3), keep the best validation model). The paper's learning rate
1e-3 is kept for ConvNet; SpotNet uses 1e-4 (at 1e-3 it collapsed to x = 0 within 100 steps).

Batches are random crops (default 128×128, with random flips / 90° rotations: the physics is
isotropic) of the training images for CPU speed; validation is the loss on whole validation
images. After training, the detection threshold maximising the pooled F1 on the validation
images is stored in the checkpoint (``extra["detection"]``), with the matching radius.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError
from .evaluate import RADIUS
from .predict import DETECT_SIGMA, detect, infer
from .simulate import read_sample

MODELS = ("spotnet", "convnet")
DEFAULT_LR = {"spotnet": 1e-4, "convnet": 1e-3}
SPOTNET_LAM = 5.0  # lam of the APG initialisation (image units 0..255)


def load_set(folders) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """[(image, target, cells_yx)] of simulated folders; all must have the same K."""
    samples = [read_sample(f) for f in folders]
    if len({t.shape[0] for _, t, _ in samples}) > 1:
        raise UserError("the folders have different numbers of time windows K")
    return samples


def init_model(name: str, folder: str | Path, lam: float = SPOTNET_LAM):
    """A fresh SpotNet (= 3 APG iterations with the central 5×5 crops of the folder's blurred
    kernels) or ConvNet (PyTorch default initialisation) for K of ``folder``."""
    import torch

    from ...data.io import read_image
    from ...models.spotnet import SpotConvNet, SpotConvNetConfig, SpotNet
    from ...sim.fluorospot import FluoroSpotConfig, make_blur, observation_kernels

    image, target, _ = read_sample(folder)
    if name == "spotnet":
        kernels = read_image(Path(folder) / "kernels.tif").astype(np.float64)
        if kernels.ndim != 3 or kernels.shape[0] != target.shape[0]:
            raise UserError(f"{folder}: kernels.tif must be (K, kh, kw) with K = {target.shape[0]}")
        full = observation_kernels(kernels, make_blur(FluoroSpotConfig()))
        return SpotNet.from_solver(torch.from_numpy(full).float(), lam, image.shape)
    if name == "convnet":
        return SpotConvNet(SpotConvNetConfig(n_channels=target.shape[0]))
    raise UserError(f"unknown model '{name}' (choose from {', '.join(MODELS)})")


def crop_sampler(samples, crop: int, batch_size: int = 1):
    """sample_batch(rng) -> (images (B, 1, c, c), targets (B, K, c, c)): random training images,
    cropped to c = min(``crop``, the smallest image side) (``crop`` 0: the smallest side), turned
    and flipped at random."""
    import torch

    from ...data.transforms import random_crop_rot_flip

    size = min(min(image.shape) for image, _, _ in samples)
    size = min(crop, size) if crop else size

    def sample_batch(rng: np.random.Generator):
        images, targets = [], []
        for _ in range(batch_size):
            image, target, _ = samples[rng.integers(len(samples))]
            image, (target,), _ = random_crop_rot_flip(rng, image, size, targets=(target,))
            images.append(image[None])
            targets.append(target)
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets))

    return sample_batch


def calibrate(checkpoint: str | Path, samples, device="cpu") -> tuple[float, float]:
    """Fix the detection threshold of a trained ``checkpoint`` at the best pooled F1 on
    validation ``samples`` (:func:`load_set`) and store it in the checkpoint (extra
    ``detection`` = {threshold, sigma}, ``val_f1``, ``radius``) -> (threshold, validation F1)."""
    from ...checkpoint import save_checkpoint
    from ...metrics import pooled_best_threshold
    from ...models import load

    model, extra = load(checkpoint, device=device)
    detections = [(*detect(infer(model, image, device)), cells) for image, _, cells in samples]
    threshold, val_f1 = pooled_best_threshold(detections, RADIUS)
    for legacy in ("threshold", "detect_sigma"):  # the slot before extra["detection"]
        extra.pop(legacy, None)
    extra |= {"detection": {"threshold": threshold, "sigma": DETECT_SIGMA}, "val_f1": val_f1,
              "radius": RADIUS}
    save_checkpoint(checkpoint, model, extra=extra)
    return threshold, val_f1


def train(
    name: str,
    data,
    out: str | Path,
    val=None,
    steps: int = 2000,
    crop: int = 128,
    lr: float | None = None,
    batch_size: int = 1,
    val_every: int = 100,
    seed: int = 0,
    device: str | None = None,
    quiet: bool = False,
    resume: bool = False,
) -> dict:
    """Train ``name`` ('spotnet' | 'convnet') with Adam (``lr`` None: :data:`DEFAULT_LR`) on
    folders ``data``, validate on ``val`` (default: the last 30% of ``data`` when there are >= 2
    folders, else ``data``). Writes the best model to ``out`` (resumable through
    ``out``.resume) and returns a summary."""
    import torch

    from ...models.spotnet import secretion_loss
    from ...train.trainer import TrainConfig, Trainer
    from ...utils import resolve_device

    data = list(data)
    if not val:
        n_val = max(1, round(0.3 * len(data))) if len(data) >= 2 else 0
        val = data[len(data) - n_val :] if n_val else data
        data = data[: len(data) - n_val] if n_val else data
    samples = load_set([*data, *val])
    train_set, val_set = samples[: len(data)], samples[len(data) :]
    torch.manual_seed(seed)
    model = init_model(name, data[0])
    dev = resolve_device(device)
    val_tensors = [
        (torch.from_numpy(i)[None, None].to(dev), torch.from_numpy(t)[None].to(dev))
        for i, t, _ in val_set
    ]

    def validate(m) -> float:
        return float(np.mean([float(secretion_loss(m(i), t)) for i, t in val_tensors]))

    trainer = Trainer(
        model,
        lambda m, batch: secretion_loss(m(batch[0]), batch[1]),
        crop_sampler(train_set, crop, batch_size),
        TrainConfig(steps=steps, lr=DEFAULT_LR[name] if lr is None else lr, val_every=val_every,
                    ckpt_every=val_every, seed=seed, device=device, quiet=quiet),
        out,
        validate=validate,
        extra={"model": name, "train": [str(d) for d in data], "val": [str(v) for v in val],
               "crop": crop, "batch_size": batch_size},
    )
    history = trainer.fit(resume=resume)
    threshold, val_f1 = calibrate(out, val_set, dev)
    vals = [h["val"] for h in history if "val" in h]
    return {"out": str(out), "steps": trainer.step, "best_val_loss": min(vals) if vals else None,
            "threshold": threshold, "val_f1": val_f1}
