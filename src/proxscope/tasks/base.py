"""The Task contract: what every task (spots, spod, cells, seg, retina) implements.

A task is a small class with class attributes that describe it (name, bundled models, defaults)
and one method per verb. The CLI (:mod:`proxscope.tasks.commands`) builds
``proxscope <task> simulate|train|predict|evaluate`` and ``proxscope bench <task>`` from it with
the shared options spelled once; the demo report (:mod:`proxscope.report`) calls :meth:`Task.demo`.

A task module is imported to build its ``--help``, so it imports only click and this module at
top level; everything heavy is imported inside the methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import click

#: click type of a folder option (``--data``, ``--images``, ...)
FOLDER = click.Path(file_okay=False)


@dataclass
class DemoResult:
    """One section of ``proxscope demo``'s report.

    ``figures``: PNG paths inside the demo folder; ``metrics``: name -> number or text."""

    title: str
    text: str
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)


class Task:
    """Base class of a task. Subclasses set the class attributes and implement the verbs.

    A verb method's docstring is its ``--help`` text (``predictor`` for ``predict``): what it
    reads and writes, then an ``Examples:`` block of command lines after a line holding only
    ``\\b``, so that click keeps the lines as written.

    Shared options are passed to the verbs as keyword arguments with these names: ``out``
    (Path), ``seed`` (int), ``device`` (str or None), ``quiet`` (bool), ``resume`` (bool),
    ``model`` (str), ``steps`` (int), ``lr`` (float or None), ``batch_size`` (int); ``threads``
    and ``--json`` are handled by the CLI. A task's own options (from :meth:`options`) arrive as
    further keyword arguments under their click parameter names.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    #: bundled pretrained model names (``proxscope.models.load(name)``)
    models: ClassVar[tuple[str, ...]] = ()
    #: ``predict --model`` default
    default_model: ClassVar[str]
    #: what ``train --model`` accepts (architectures / variants) and its default
    architectures: ClassVar[tuple[str, ...]] = ()
    #: defaults of the shared training options: keys ``steps``, ``lr``, ``batch_size``
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 1000, "lr": None, "batch_size": 8}
    #: what one image's prediction is when a folder is predicted: OUT/<stem><predict_suffix>
    #: ("" = a folder per image)
    predict_suffix: ClassVar[str] = ""
    #: the table ``predict`` writes into OUT for several images (one row per image)
    summary_name: ClassVar[str] = "summary.csv"
    #: files ``evaluate`` pairs by name when given folders, and the fixed file name inside a
    #: per-image folder (e.g. ``cells.csv``: the image name is then the folder's)
    evaluate_suffixes: ClassVar[tuple[str, ...]] = (".csv",)
    evaluate_filename: ClassVar[str | None] = None

    def options(self, verb: str) -> list[Callable]:
        """The task's own click options for ``verb`` ('simulate', 'train', 'predict',
        'evaluate', 'bench'), as decorators; none by default."""
        return []

    def simulate(self, out: Path, *, seed: int, quiet: bool, **opts) -> dict:
        """Write simulated data with ground truth into folder ``out``; returns a summary."""
        raise NotImplementedError

    def train(self, out: Path, **opts) -> dict:
        """Train a model and write the checkpoint ``out`` (``out.resume`` for ``--resume``)."""
        raise NotImplementedError

    def predictor(self, *, model: str, device: str | None, seed: int, quiet: bool,
                  **opts) -> Callable[[Path, Path], dict]:
        """Load the model once; return ``f(image, out) -> summary row`` that predicts one image
        file and writes its outputs at ``out`` (a file or a folder, as the task's
        ``predict_suffix`` says)."""
        raise NotImplementedError

    def evaluate_pair(self, pred: Path, truth: Path, **opts) -> dict:
        """Scores of one prediction file against its truth file."""
        raise NotImplementedError

    def pool(self, results: dict[str, dict], **opts) -> dict:
        """Scores pooled over images (``results``: image name -> :meth:`evaluate_pair`).
        Default: the mean of every numeric score."""
        keys = {k for r in results.values() for k, v in r.items() if _is_number(v)}
        return {
            k: sum(r[k] for r in results.values() if _is_number(r.get(k)))
            / max(1, sum(_is_number(r.get(k)) for r in results.values()))
            for k in sorted(keys)
        }

    def evaluate(self, pred: Path, truth: Path, **opts) -> dict:
        """Scores of ``pred`` against ``truth``: two files, or two folders paired by image name
        (-> ``{"images", "pooled", "per_image"}``)."""
        from ..data.io import pair_files

        if pred.is_file() and truth.is_file():
            return self.evaluate_pair(pred, truth, **opts)
        pairs = pair_files(pred, truth, self.evaluate_suffixes, self.evaluate_filename)
        results = {name: self.evaluate_pair(p, t, **opts) for name, (p, t) in pairs.items()}
        return {"images": len(results), "pooled": self.pool(results, **opts), "per_image": results}

    def bench(self, *, quick: bool, seed: int, device: str | None, quiet: bool, **opts) -> dict:
        """Reproduce the seed's claims; returns the results written to ``--json``."""
        raise NotImplementedError

    def demo(self, out: Path, *, quiet: bool) -> DemoResult:
        """Bundled weights on simulated (and real, where available) data, into folder ``out``."""
        raise NotImplementedError


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
