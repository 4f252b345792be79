"""Training: one Trainer for every task."""

from .trainer import TrainConfig, Trainer, to_device

__all__ = ["TrainConfig", "Trainer", "to_device"]
