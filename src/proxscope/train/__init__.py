"""Training: one Trainer for every task, and layer-wise training of unrolled nets (Algorithm 1)."""

from .layerwise import LayerwiseConfig, train_layerwise
from .trainer import TrainConfig, Trainer, to_device

__all__ = ["LayerwiseConfig", "TrainConfig", "Trainer", "to_device", "train_layerwise"]
