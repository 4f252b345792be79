"""Tasks: one package per published system, each implementing :class:`proxscope.tasks.base.Task`.

``REGISTRY`` maps a task name to ``"module:Class"`` and a one-line summary. It is read by the CLI
(:mod:`proxscope.cli`) and the demo report (:mod:`proxscope.report`); a task module is imported
only when that task is used, so ``proxscope --help`` imports nothing heavy.
"""

from __future__ import annotations

import importlib

REGISTRY: dict[str, tuple[str, str]] = {
    "spots": (
        "proxscope.tasks.spots.task:SpotsTask",
        "FluoroSpot/ELISpot cell detection and secretion profiles (SpotNet, ConvNet, APG).",
    ),
    "spod": (
        "proxscope.tasks.spod.task:SpodTask",
        "SPoD super-resolution recovery of polarization stacks (SPoD-Net, LISTA-Net, FISTA).",
    ),
    "cells": (
        "proxscope.tasks.cells.task:CellsTask",
        "Cell detection by compressed-sensing output encoding (CNNCS, ECNNCS-1/2).",
    ),
    "seg": (
        "proxscope.tasks.seg.task:SegTask",
        "Noise-robust segmentation with a TV-regularized softmax (UNet/RUNet, SegNet/RSegNet).",
    ),
    "retina": (
        "proxscope.tasks.retina.task:RetinaTask",
        "Referable diabetic-retinopathy screening with lesion heatmaps (net B, sparsity-enhanced).",
    ),
}


def get_task(name: str):
    """The :class:`~proxscope.tasks.base.Task` instance registered as ``name``.

    Raises :class:`proxscope.errors.UserError` for an unknown name."""
    from ..errors import UserError

    if name not in REGISTRY:
        raise UserError(f"unknown task '{name}' (tasks: {', '.join(REGISTRY)})")
    module_name, class_name = REGISTRY[name][0].split(":")
    return getattr(importlib.import_module(module_name), class_name)()
