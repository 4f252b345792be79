"""Heatmaps that show which pixels an image-level ConvNet score depends on (deep image mining).

All maps are (N, H, W) float32 at the input size for images (N, C, H, W) and a model returning
one score per image. The seed's criteria: :func:`sensitivity` (eq. 2),
:func:`hue_constrained_sensitivity` (eq. 3) and the training penalty :func:`sparsity_penalty`
(eq. 6, with :func:`masked_input`); comparators: :func:`lrp`, :func:`occlusion`,
:func:`grad_cam`. Seed: deep-image-mining-retinopathy-heatmaps.txt.
"""

from .lrp import lrp
from .perturbation import grad_cam, occlusion
from .sensitivity import hue_constrained_sensitivity, masked_input, sensitivity, sparsity_penalty

__all__ = [
    "grad_cam",
    "hue_constrained_sensitivity",
    "lrp",
    "masked_input",
    "occlusion",
    "sensitivity",
    "sparsity_penalty",
]
