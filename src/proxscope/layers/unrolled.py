"""Unrolled proximal-gradient networks (LISTA-style): layer m is one solver iteration with its own
operator A_m, step η_m, threshold θ_m and momentum β_m, all trainable.

    x_0 = z_0 = 0
    x_m = prox(z_{m−1} − η_m · A_m^T(A_m z_{m−1} − y), θ_m)
    z_m = x_m + β_m (x_m − x_{m−1})

``from_solver(op, lam, n_layers)`` sets A_m = A, η_m = 1/L, θ_m = lam/L and β_m from the solver's
momentum rule (:func:`~proxscope.solvers.proximal_gradient.momentum_schedule`, the
solvers' own), so the untrained network *is* n_layers iterations of ISTA / FISTA / APG.

Seed: spodnet-lista-spod-microscopy.txt Sec. 3 (LISTA-Net, Fig. 5);
spotnet-fluorospot-learned-iterations.txt Fig. 2 (unrolled APG).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..operators.base import LinearOperator
from ..prox import soft_threshold
from ..solvers.proximal_gradient import momentum_schedule


def _parameters(values: Sequence[float], per_layer: bool) -> nn.Parameter | nn.ParameterList:
    dtype = torch.get_default_dtype()
    if per_layer:
        return nn.ParameterList(nn.Parameter(torch.tensor(float(v), dtype=dtype)) for v in values)
    return nn.Parameter(torch.tensor(list(values), dtype=dtype))


class UnrolledProximalGradient(nn.Module):
    """A stack of proximal-gradient layers; see the module docstring for the recursion.

    ops: one operator per layer (deep copies are *not* made here); step, threshold, momentum:
    one value per layer. ``output`` is applied to the last iterate (e.g. ``torch.relu`` for the
    [x]_+ post-threshold of SPoD-Net eq. (11)). ``per_layer``: step and threshold as one scalar
    Parameter per layer (an ``nn.ParameterList``) instead of one (M,) tensor, so layer-wise
    training (:mod:`proxscope.train.layerwise`) can give each layer its own optimizer group.
    ``positive``: ``step`` and ``threshold`` are stored as their logarithms (pass the positive
    values; the layers use exp of the stored parameters), so training can never make them
    negative and Adam moves them by relative amounts, on the scale of their input.
    """

    def __init__(
        self,
        ops: Sequence[LinearOperator],
        step: Sequence[float],
        threshold: Sequence[float],
        momentum: Sequence[float] | None = None,
        prox: Callable = soft_threshold,
        learn_momentum: bool = False,
        output: Callable[[torch.Tensor], torch.Tensor] | None = None,
        per_layer: bool = False,
        positive: bool = False,
    ):
        super().__init__()
        n = len(ops)
        momentum = [0.0] * n if momentum is None else list(momentum)
        if not (len(step) == len(threshold) == len(momentum) == n):
            raise ValueError("ops, step, threshold and momentum need one entry per layer")
        self.ops = nn.ModuleList(ops)
        self.positive = positive
        if positive:
            if min(step) <= 0 or min(threshold) <= 0:
                raise ValueError("positive=True needs step > 0 and threshold > 0")
            step = [math.log(v) for v in step]
            threshold = [math.log(v) for v in threshold]
        self.step = _parameters(step, per_layer)
        self.threshold = _parameters(threshold, per_layer)
        self.momentum = nn.Parameter(
            torch.tensor(momentum, dtype=torch.get_default_dtype()), requires_grad=learn_momentum
        )
        self.prox = prox
        self.output = output

    def step_of(self, m: int) -> torch.Tensor:
        """η_m of layer m (0-based)."""
        return self.step[m].exp() if self.positive else self.step[m]

    def threshold_of(self, m: int) -> torch.Tensor:
        """θ_m of layer m (0-based)."""
        return self.threshold[m].exp() if self.positive else self.threshold[m]

    @property
    def n_layers(self) -> int:
        return len(self.ops)

    @classmethod
    def from_solver(
        cls,
        op: LinearOperator,
        lam: float,
        n_layers: int,
        *,
        in_shape: tuple[int, ...] | None = None,
        step: float | None = None,
        prox: Callable = soft_threshold,
        momentum: str = "none",
        learn_op: bool = True,
        share_op: bool = False,
        **kwargs,
    ) -> UnrolledProximalGradient:
        """Exactly ``n_layers`` iterations of ISTA ('none'), FISTA ('fista') or APG ('nesterov')
        with constant step ``step`` (default 1/||A||², which needs ``in_shape``).

        Each layer gets its own deep copy of ``op`` (trainable when ``learn_op``); with
        ``share_op`` all layers use ``op`` itself, unchanged (a fixed-operator solver: no copies,
        which matters when the network is rebuilt on every call)."""
        if step is None:
            if in_shape is None:
                raise ValueError("from_solver needs in_shape (to compute 1/L) or an explicit step")
            step = 1.0 / op.lipschitz(in_shape)
        if share_op:
            ops = [op] * n_layers
        else:
            ops = []
            for _ in range(n_layers):
                layer_op = copy.deepcopy(op)
                for p in layer_op.parameters():
                    p.requires_grad_(learn_op)
                ops.append(layer_op)
        return cls(
            ops,
            [step] * n_layers,
            [lam * step] * n_layers,
            momentum_schedule(momentum, n_layers),
            prox=prox,
            **kwargs,
        )

    def layer(self, m: int, x_prev: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x_m from z_{m−1} (the proximal gradient step of layer m, 0-based)."""
        op = self.ops[m]
        return self.prox(torch.addcmul(z, self.step_of(m), op.adjoint(op(z) - y), value=-1),
                         self.threshold_of(m))

    def forward(
        self, y: torch.Tensor, n_layers: int | None = None, x0: torch.Tensor | None = None,
        apply_output: bool = True,
    ) -> torch.Tensor:
        """y (B, *out_shape) -> x (B, *in_shape). ``n_layers`` runs only the first layers
        (layer-wise training); ``apply_output=False`` returns the last iterate without
        ``output``."""
        n_layers = self.n_layers if n_layers is None else n_layers
        if x0 is None and n_layers > 0 and type(self).layer is UnrolledProximalGradient.layer:
            # x_0 = z_0 = 0: layer 1 is prox(η_1 A_1^T y, θ_1), z_1 = (1 + β_1) x_1 (the same
            # numbers as the general step, without A_1 0 and a throwaway adjoint for the shape).
            x = self.prox(self.step_of(0) * self.ops[0].adjoint(y), self.threshold_of(0))
            z, first = (1 + self.momentum[0]) * x, 1
        else:
            x = torch.zeros_like(self.ops[0].adjoint(y)) if x0 is None else x0
            z, first = x, 0
        for m in range(first, n_layers):
            x_new = self.layer(m, x, z, y)
            z = torch.lerp(x, x_new, 1 + self.momentum[m])  # x_new + β_m (x_new − x)
            x = x_new
        return self.output(x) if self.output is not None and apply_output else x
