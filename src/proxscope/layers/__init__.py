"""Unrolled building blocks and optimization layers."""

from .unrolled import UnrolledProximalGradient, momentum_schedule

__all__ = ["UnrolledProximalGradient", "momentum_schedule"]
