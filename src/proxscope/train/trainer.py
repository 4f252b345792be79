"""One Trainer for every task: optimizer, seeded batches, validation, best checkpoint, resume.

Batches come from a function ``sample_batch(rng) -> batch`` that receives a NumPy Generator
seeded by (seed, step): a run resumed from step k draws exactly the batches an uninterrupted run
would, so the final weights are the same. The global torch RNG is reseeded the same way each step.

Files: ``out`` holds the best model (lowest validation loss; the last one without validation) in
the format of :mod:`proxscope.checkpoint`; ``out`` + ".resume" holds the latest weights,
optimizer state, step and history every ``ckpt_every`` steps, and ``resume=True`` continues
from it.

Scale-out: started by ``torchrun --nproc_per_node N`` (WORLD_SIZE > 1), the Trainer joins the
process group (gloo on CPU, nccl on CUDA), broadcasts rank 0's initial weights, draws a different
batch on each rank (rng seeded by (seed, step, rank)) and averages gradients across ranks before
each optimizer step (data parallel, as DistributedDataParallel does); only rank 0 writes files
and shows progress. A single process needs no change.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import read_checkpoint, save_checkpoint
from ..errors import UserError
from ..utils import resolve_device


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    optimizer: str = "adam"  # 'adam' or 'sgd'
    weight_decay: float = 0.0
    grad_clip: float | None = None
    val_every: int = 100
    ckpt_every: int = 100
    seed: int = 0
    device: str | None = None
    quiet: bool = False
    #: run ``validate`` with autograd on (e.g. a validation score built from input gradients,
    #: such as heatmaps); off: under ``torch.no_grad``
    validation_grad: bool = False
    #: divide every learning rate by 10 after this many validations without a new best
    #: (None: constant learning rate)
    plateau_patience: int | None = None
    #: collapse guard for a positive validation loss: when a validation exceeds this factor
    #: times the best one, reload the best weights, clear the optimizer's moments and halve
    #: every learning rate (e.g. a thresholded net whose units all went dead, issue 16: no
    #: gradient can bring it back). None: off
    restore_factor: float | None = None
    #: collapse guard, absolute: restore as above when a validation reaches this level while
    #: the best is below it (e.g. the score of a dead, all-zero output, which early in training
    #: can be within ``restore_factor`` of the best). None: off
    restore_level: float | None = None

    def __post_init__(self):
        # a torch.device is accepted and stored as its name, so the config stays JSON (resume files)
        if self.device is not None:
            self.device = str(self.device)
        if self.restore_factor is not None and not self.restore_factor > 1:
            raise ValueError(f"restore_factor must be > 1 (or None), got {self.restore_factor}")


def to_device(batch, device):
    """Move tensors inside (nested) tuples / lists / dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _init_distributed(device) -> tuple[int, int]:
    """(world size, rank); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_world_size(), dist.get_rank()


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, param_state in state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


class Trainer:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over batches from ``sample_batch``.

    validate: optional ``validate(model) -> float`` (lower is better), run every ``val_every``
    steps in eval mode, under ``torch.no_grad`` (``torch.enable_grad`` when
    ``config.validation_grad``). param_groups: optional optimizer parameter groups
    (default: all trainable parameters with ``config.lr``). extra: JSON-able metadata stored in
    the checkpoint (e.g. detection thresholds, data description).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
        sample_batch: Callable[[np.random.Generator], Any],
        config: TrainConfig,
        out: str | Path,
        validate: Callable[[torch.nn.Module], float] | None = None,
        param_groups: list[dict] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        self.config = config
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and "LOCAL_RANK" in os.environ:
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self.world, self.rank = _init_distributed(self.device)
        self.model = model.to(self.device)
        if self.world > 1:
            import torch.distributed as dist

            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, src=0)
        self.loss_fn = loss_fn
        self.sample_batch = sample_batch
        self.validate = validate
        self.out = Path(out)
        self.resume_path = self.out.with_name(self.out.name + ".resume")
        self.extra = dict(extra or {})
        groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
        if config.optimizer == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
        elif config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=config.lr, weight_decay=config.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {config.optimizer!r}")
        self.step = 0
        self.best_val = math.inf
        self.stale = 0  # validations since the last new best
        self.history: list[dict[str, float]] = []

    # -- persistence -------------------------------------------------------------------------
    def _save_resume(self) -> None:
        if self.rank != 0:
            return
        tensors, optim_meta = _flatten_optimizer(self.optimizer.state_dict())
        meta = {
            "step": self.step,
            "best_val": self.best_val if math.isfinite(self.best_val) else None,
            "stale": self.stale,
            "history": self.history,
            "optimizer": optim_meta,
            "train_config": asdict(self.config),
            "task": self.extra.get("task"),
        }
        save_checkpoint(self.resume_path, self.model, extra=meta, tensors=tensors)

    def _check_resume_matches(self, ckpt) -> None:
        """One line naming how a resume file differs from this run: another model class (e.g.
        the resume file of another task), another task, or other config values."""
        import dataclasses

        name = self.resume_path
        here = f"{type(self.model).__module__}:{type(self.model).__qualname__}"
        theirs = ckpt.extra.get("task")
        task = f" (task {theirs})" if theirs else ""
        if ckpt.model_class != here:
            raise UserError(f"{name}: resume file of a {ckpt.model_class.rpartition(':')[2]}"
                            f"{task}, this run trains a {type(self.model).__name__}; delete it or "
                            f"choose another --out")
        if theirs and self.extra.get("task") not in (None, theirs):
            raise UserError(f"{name}: resume file of task {theirs}, this run is task "
                            f"{self.extra['task']}; delete it or choose another --out")
        config = getattr(self.model, "config", None)
        if dataclasses.is_dataclass(config):
            ours = dataclasses.asdict(config)
            diff = [k for k in ours if k in ckpt.config and ckpt.config[k] != ours[k]]
            if diff:
                shown = ", ".join(f"{k} {ckpt.config[k]!r} (now {ours[k]!r})" for k in diff[:3])
                raise UserError(f"{name}: resume file of a {type(self.model).__name__} with "
                                f"{shown}; rerun with its settings or delete it")

    def _load_resume(self) -> None:
        ckpt = read_checkpoint(self.resume_path, device=self.device)
        self._check_resume_matches(ckpt)
        try:
            self.model.load_state_dict(ckpt.model_state())
            self.optimizer.load_state_dict(
                _unflatten_optimizer(ckpt.tensors, ckpt.extra["optimizer"])
            )
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{self.resume_path}: does not match this model ({first})") from None
        self.step = int(ckpt.extra["step"])
        best = ckpt.extra.get("best_val")
        self.best_val = math.inf if best is None else float(best)
        self.stale = int(ckpt.extra.get("stale", 0))
        self.history = list(ckpt.extra.get("history", []))

    def _on_plateau(self) -> None:
        """Count a validation without a new best; after ``plateau_patience`` of them, divide
        the learning rates by 10 (the seed's manual schedule, deep-image-mining Sec. 5.1.3)."""
        self.stale += 1
        if self.config.plateau_patience and self.stale >= self.config.plateau_patience:
            for group in self.optimizer.param_groups:
                group["lr"] /= 10
            self.stale = 0

    def _collapsed(self, val: float) -> bool:
        """The collapse guard's test (``restore_factor``, ``restore_level``; NaN counts)."""
        cfg = self.config
        if not math.isfinite(self.best_val):
            return False
        by_factor = (cfg.restore_factor is not None and self.best_val > 0
                     and not val <= cfg.restore_factor * self.best_val)
        by_level = (cfg.restore_level is not None and self.best_val < cfg.restore_level
                    and not val < cfg.restore_level)
        return by_factor or by_level

    def _restore_best(self) -> None:
        """Collapse guard (:meth:`_collapsed`): best weights back, fresh Adam moments, half the
        learning rates; every rank reads the best file rank 0 wrote."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        self.model.load_state_dict(read_checkpoint(self.out, device=self.device).model_state())
        self.optimizer.state.clear()
        for group in self.optimizer.param_groups:
            group["lr"] /= 2
        self.stale = 0

    def _save_best(self) -> None:
        if self.rank != 0:
            return
        save_checkpoint(self.out, self.model, extra={**self.extra, "history": self.history})

    def _average_gradients(self) -> None:
        import torch.distributed as dist

        for p in self.model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= self.world

    # -- loop --------------------------------------------------------------------------------
    def _run_validation(self) -> float:
        self.model.eval()
        with torch.enable_grad() if self.config.validation_grad else torch.no_grad():
            value = float(self.validate(self.model))
        self.model.train()
        if self.world > 1:  # every rank takes the same best / restore / plateau branch
            import torch.distributed as dist

            shared = torch.tensor([value], dtype=torch.float64, device=self.device)
            dist.broadcast(shared, src=0)
            value = float(shared)
        return value

    def fit(self, resume: bool = False) -> list[dict[str, float]]:
        """Train to ``config.steps`` steps; returns the history of (step, loss[, val])."""
        from tqdm.auto import tqdm

        if resume:
            if not self.resume_path.is_file():
                raise UserError(f"--resume: no resume file {self.resume_path}; start without it")
            self._load_resume()
        cfg = self.config
        self.model.train()
        bar = tqdm(
            total=cfg.steps, initial=self.step, disable=cfg.quiet or self.rank != 0, desc="train", unit="step"
        )
        running = None
        while self.step < cfg.steps:
            rng = np.random.default_rng([cfg.seed, self.step] + ([self.rank] if self.world > 1 else []))
            torch.manual_seed(cfg.seed * 1_000_003 + self.step)
            batch = to_device(self.sample_batch(rng), self.device)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model, batch)
            if not torch.isfinite(loss.detach()):
                raise UserError(f"training diverged: loss is {float(loss)} at step {self.step}; lower --lr")
            loss.backward()
            if self.world > 1:
                self._average_gradients()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            value = float(loss.detach())
            running = value if running is None else 0.9 * running + 0.1 * value
            record: dict[str, float] = {"step": self.step, "loss": value}
            self.history.append(record)  # before _save_best: the best file holds its own record
            if self.validate is not None and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                record["val"] = self._run_validation()
                if record["val"] < self.best_val:
                    self.best_val, self.stale = record["val"], 0
                    self._save_best()
                elif self._collapsed(record["val"]):
                    self._restore_best()
                    record["restored"] = True
                else:
                    self._on_plateau()
                bar.set_postfix(loss=f"{running:.4g}", val=f"{record['val']:.4g}")
            elif self.step % 10 == 0:
                bar.set_postfix(loss=f"{running:.4g}")
            bar.update(1)
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self._save_resume()
        bar.close()
        if self.validate is None or not self.out.exists():
            self._save_best()
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return self.history
