"""Base class of proxscope models: a plain nn.Module built from a config dataclass."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import nn


class ConfigModule(nn.Module):
    """An nn.Module whose constructor takes one config dataclass (``config_class``).

    ``from_config(dict)`` rebuilds it from the JSON stored in a checkpoint, so every model can be
    saved and loaded with :mod:`proxscope.checkpoint` without a per-model registry.
    """

    config_class: ClassVar[type]

    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = set(config) - fields
        if unknown:
            raise TypeError(f"unknown config fields {sorted(unknown)} for {cls.__name__}")
        return cls(cls.config_class(**config))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
