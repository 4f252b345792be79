"""Layer-wise training of unrolled networks (Algorithm 1), one :class:`Trainer` run per stage.

For m = 1..M: Opt1 trains the new layer Θ_m alone (lr η); for m >= 2, Opt2 trains all m layers
(0.2·η for Θ_m, 0.02·η for Θ_1..Θ_{m−1}); then Θ_m ← γ·Θ_m unless m = M. Every stage trains
the first m layers on batches drawn (without replacement) from one fixed training set.

The model is any unrolled ``nn.Module`` with a dataclass ``config`` holding ``n_layers`` (M) and
a method ``layer_parameters(m) -> list[Parameter]`` (Θ_m, 0-based); the loss is
``loss_fn(model, batch, m) -> scalar`` for the first m layers.

Resume: stage k trains into ``OUT.stages/stage<k>.safetensors(.resume)`` and
``OUT.stages/done.safetensors`` is written after each finished stage (after the shrink), so
``resume=True`` continues inside the interrupted stage with the same batches; the folder is
removed at the end.

Seed: spodnet-lista-spod-microscopy.txt Algorithm 1, Sec. 5.1 (Adam, 0.2·η / 0.02·η, γ).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import read_checkpoint, save_checkpoint
from ..errors import UserError
from .trainer import TrainConfig, Trainer


@dataclass
class LayerwiseConfig:
    """steps: Adam steps of Opt1 and of Opt2 for each layer; lr: η of Opt1; gamma: shrink γ in
    (0, 1]; batch_size; relative_lr: see :func:`param_groups`. A subclass may add fields (its
    recipe): they are stored with the checkpoint (``extra["train"]``)."""

    steps: int = 100
    lr: float = 0.05
    gamma: float = 0.3
    batch_size: int = 20
    relative_lr: bool = True
    seed: int = 0
    device: str | None = None
    quiet: bool = False


def stages(n_layers: int) -> list[tuple[int, str]]:
    """(m, 'opt1'), then (m, 'opt2') for m >= 2, for m = 1..n_layers."""
    return [(m, phase) for m in range(1, n_layers + 1)
            for phase in (("opt1",) if m == 1 else ("opt1", "opt2"))]


def param_groups(model, m: int, phase: str, lr: float, relative: bool) -> list[dict]:
    """Opt1: Θ_m at lr; Opt2: Θ_m at 0.2·lr, Θ_1..Θ_{m−1} at 0.02·lr (Algorithm 1, Sec. 5.1).

    relative: one group per tensor with lr × the tensor's RMS at the stage start, so lr is a
    relative change per step (in SPoD-Net g ~ 1e-3 for a PSF of sum 1, h ~ 1, η ~ 1e-2,
    θ ~ 1e-4: one absolute Adam lr cannot suit all of them)."""

    def groups(params, rate):
        if not relative:
            return [{"params": list(params), "lr": rate}]
        return [{"params": [p], "lr": rate * float(p.detach().pow(2).mean().sqrt().clamp_min(1e-8))}
                for p in params]

    new = model.layer_parameters(m - 1)
    if phase == "opt1":
        return groups(new, lr)
    old = [p for k in range(m - 1) for p in model.layer_parameters(k)]
    return groups(new, 0.2 * lr) + groups(old, 0.02 * lr)


@torch.no_grad()
def shrink(model, m: int, gamma: float) -> None:
    """Θ_m ← γ·Θ_m (0-based m; Algorithm 1 after layer m's training)."""
    for p in model.layer_parameters(m):
        p.mul_(gamma)


def train_layerwise(
    model,
    loss_fn: Callable[[torch.nn.Module, tuple, int], torch.Tensor],
    data: tuple[torch.Tensor, ...],
    cfg: LayerwiseConfig,
    out: str | Path,
    resume: bool = False,
    on_stage: Callable[[int, str, torch.nn.Module], dict] | None = None,
    extra: dict | None = None,
) -> list[dict]:
    """Algorithm 1 on the fixed training set ``data`` (tensors with one row per sample, e.g.
    inputs and targets); saves ``out`` with ``extra`` + ``train`` (``cfg``) + ``stages``.

    Returns one record per stage: layer m, phase, first/last training loss, the per-step loss
    curve, and whatever ``on_stage(m, phase, model)`` returns (e.g. a test objective; called
    when the stage's training ends, before the shrink). Raises :class:`UserError` for
    ``resume`` with nothing to resume.
    """
    out = Path(out)
    work = out.with_name(out.name + ".stages")
    done_path = work / "done.safetensors"
    n = len(data[0])

    def sample_batch(rng: np.random.Generator):
        idx = torch.from_numpy(rng.choice(n, size=min(cfg.batch_size, n), replace=False))
        return tuple(d[idx] for d in data)

    records: list[dict] = []
    first = 0
    if resume and done_path.is_file():
        ckpt = read_checkpoint(done_path)
        model.load_state_dict(ckpt.model_state())
        records = ckpt.extra["records"]
        first = int(ckpt.extra["stage"]) + 1
    elif resume and not (work / "stage00.safetensors.resume").is_file():
        raise UserError(f"--resume: nothing to resume in {work}; start without --resume")
    elif not resume and work.exists():
        shutil.rmtree(work)
    n_layers = model.config.n_layers
    plan = stages(n_layers)
    for index in range(first, len(plan)):
        m, phase = plan[index]
        stage_out = work / f"stage{index:02d}.safetensors"
        trainer = Trainer(
            model, lambda net, batch, m=m: loss_fn(net, batch, m), sample_batch,
            TrainConfig(steps=cfg.steps, lr=cfg.lr, val_every=cfg.steps + 1,
                        ckpt_every=max(1, cfg.steps // 4), seed=cfg.seed * 1000 + index,
                        device=cfg.device, quiet=cfg.quiet),
            stage_out, param_groups=param_groups(model, m, phase, cfg.lr, cfg.relative_lr),
        )
        losses = [h["loss"] for h in trainer.fit(resume=resume and trainer.resume_path.is_file())]
        record = {"layer": m, "phase": phase, "loss_first": losses[0], "loss_last": losses[-1],
                  "loss_curve": losses}
        if on_stage is not None:
            record.update(on_stage(m, phase, model))
        if m != n_layers and (phase == "opt2" or m == 1):
            shrink(model, m - 1, cfg.gamma)
        records.append(record)
        save_checkpoint(done_path, model, extra={"stage": index, "records": records})
        for path in (stage_out, trainer.resume_path):
            path.unlink(missing_ok=True)
    save_checkpoint(out, model, extra={**(extra or {}), "train": asdict(cfg),
                                       "stages": [{k: v for k, v in r.items() if k != "loss_curve"}
                                                  for r in records]})
    shutil.rmtree(work, ignore_errors=True)
    return records
