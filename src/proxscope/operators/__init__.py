"""Linear forward models with forward / adjoint / lipschitz, batched over a leading dimension."""

from .base import LinearOperator
from .conv import FFTConv, MultiConv2d, ValidConv
from .matrix import MatrixOperator

__all__ = ["LinearOperator", "MatrixOperator", "MultiConv2d", "ValidConv", "FFTConv"]
