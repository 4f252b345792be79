"""One CLI builder for every task: ``proxscope <task> simulate|train|predict|evaluate`` and
``proxscope bench <task>``, with the shared options spelled once here.

Shared options: ``--out --seed --device --quiet --resume --json --quick --threads --batch-size
--steps --lr --model``; a task adds only its own (:meth:`Task.options`). ``predict`` takes a file,
a folder or a glob and writes one output per image plus a summary table (``Task.summary_name``,
with an ``error`` column for images that could not be read: exit code 2) for several;
``evaluate`` takes two files or two folders paired by image name. The output path is checked
before any computation. Only click is imported here.
"""

from __future__ import annotations

from pathlib import Path

import click

from .base import Task

VERBS = ("simulate", "train", "predict", "evaluate")


def _opt(*names, **kwargs):
    return click.option(*names, **kwargs)


SEED = _opt("--seed", default=0, show_default=True, type=int, help="Seed of every random choice.")
DEVICE = _opt("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present).")
QUIET = _opt("--quiet", is_flag=True, help="No progress bar or summary.")
THREADS = _opt("--threads", default=None, type=click.IntRange(1),
               help="CPU threads for torch (default: torch's).")
RESUME = _opt("--resume", is_flag=True, help="Continue an interrupted run from OUT.resume.")


def _shared(verb: str, task: Task) -> list:
    """The shared options of ``verb`` for ``task`` (defaults from the task)."""
    if verb == "simulate":
        return [_opt("--out", required=True, type=click.Path(), help="Output folder."), SEED, QUIET]
    if verb == "train":
        d = task.train_defaults
        return [
            _opt("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write."),
            _opt("--model", default=task.architectures[0], show_default=True,
                 type=click.Choice(task.architectures), help="Architecture to train."),
            _opt("--steps", default=d["steps"], show_default=True, type=click.IntRange(1),
                 help="Optimizer steps."),
            _opt("--lr", default=d["lr"], show_default=d["lr"] is not None, callback=_positive,
                 type=click.FloatRange(min=0, min_open=True),
                 help="Learning rate" + ("." if d["lr"] is not None else " (default: the model's).")),
            _opt("--batch-size", default=d["batch_size"], show_default=True, type=click.IntRange(1)),
            SEED, DEVICE, THREADS, RESUME, QUIET,
        ]
    if verb == "predict":
        return [
            click.argument("inputs", metavar="IMAGE|FOLDER|GLOB"),
            _opt("--out", required=True, type=click.Path(),
                 help=f"Output for one image; for several, a folder: one output per image + "
                      f"{task.summary_name}."),
            _opt("--model", default=task.default_model, show_default=True,
                 help=f"Bundled model ({', '.join(task.models)}) or a checkpoint path."),
            SEED, DEVICE, THREADS, QUIET,
        ]
    if verb == "evaluate":
        return [
            _opt("--pred", required=True, type=click.Path(), help="Prediction file or folder."),
            _opt("--truth", required=True, type=click.Path(), help="Truth file or folder."),
            _opt("--out", default=None, type=click.Path(dir_okay=False), help="Also write the JSON here."),
            QUIET,
        ]
    raise ValueError(verb)


def _positive(ctx, param, value):
    """Reject NaN/Inf, which click's FloatRange lets through."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}", ctx, param)
    return value


def _decorate(fn, options):
    for option in reversed(options):
        fn = option(fn)
    return fn


def _prepare(kwargs: dict, out_is_dir: bool | None = None) -> dict:
    """Checks and settings common to every verb: output path, device name, threads."""
    from ..data.io import check_writable

    threads = kwargs.pop("threads", None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if kwargs.get("device") is not None:
        from ..utils import resolve_device

        resolve_device(kwargs["device"])
    if kwargs.get("out") is not None:
        kwargs["out"] = check_writable(kwargs["out"], is_dir=out_is_dir)
    return kwargs


def _echo(payload: dict, quiet: bool) -> None:
    from ..data.io import to_json

    if not quiet:
        click.echo(to_json(payload))


def _help(doc: str) -> str:
    """A verb's ``--help``: its method's docstring, examples included (:class:`Task`)."""
    import inspect

    return inspect.cleandoc(doc)


def _write_command(task: Task, verb: str, out_is_dir: bool) -> click.Command:
    """``simulate`` (OUT is a folder) or ``train`` (OUT is a checkpoint): the task's method
    with the shared and the task's options; prints its summary as JSON."""
    method = getattr(task, verb)

    def command(**kwargs):
        _echo(method(**_prepare(kwargs, out_is_dir=out_is_dir)), kwargs["quiet"])

    return click.command(verb, help=_help(method.__doc__ or verb))(
        _decorate(command, _shared(verb, task) + task.options(verb)))


def _predict_command(task: Task) -> click.Command:
    def predict(inputs, **kwargs):
        from ..data.io import IMAGE_SUFFIXES, expand_inputs, write_table
        from ..errors import UserError

        images = expand_inputs(inputs)
        several = len(images) > 1 or not Path(inputs).is_file()
        if several and Path(kwargs["out"]).suffix.lower() in IMAGE_SUFFIXES | {".csv", ".json"}:
            raise UserError(f"--out {kwargs['out']}: several images need an output folder, not a file")
        _check_model(task, kwargs["model"])
        kwargs = _prepare(kwargs, out_is_dir=True if several or not task.predict_suffix else None)
        out, quiet = kwargs.pop("out"), kwargs["quiet"]
        run = task.predictor(**kwargs)
        from tqdm import tqdm

        from ..data.tiling import tile_progress

        with tile_progress(None if quiet else f"{task.name} predict (tiles)"):
            if not several:
                _echo(run(images[0], out), quiet)
                return
            rows, failed = [], 0
            for image, name in tqdm(list(zip(images, _output_names(images, inputs), strict=True)),
                                    desc=f"{task.name} predict", disable=quiet, unit="image"):
                label = image.name if name == image.stem else name  # the file, or its folder
                try:  # a bad image in a folder is reported, the others are still predicted
                    rows.append({"image": label} | run(image, out / f"{name}{task.predict_suffix}"))
                except UserError as exc:
                    failed += 1
                    rows.append({"image": label, "error": str(exc)})
        write_table(out / task.summary_name, rows)
        if failed:
            raise UserError(f"{failed} of {len(rows)} images could not be predicted "
                            f"(their 'error' column in {out / task.summary_name})")
        if not quiet:
            click.echo(f"{len(rows)} images -> {out} ({task.summary_name})")

    doc = task.predictor.__doc__ or "Predict."
    return click.command("predict", help=_help(doc))(
        _decorate(predict, _shared("predict", task) + task.options("predict")))


def _evaluate_command(task: Task) -> click.Command:
    def evaluate(pred, truth, **kwargs):
        from ..data.io import write_json

        kwargs = _prepare(kwargs, out_is_dir=False)
        out, quiet = kwargs.pop("out"), kwargs.pop("quiet")
        result = task.evaluate(_existing(pred, "--pred"), _existing(truth, "--truth"), **kwargs)
        if out is not None:
            write_json(out, result)
        _echo(result, quiet)

    doc = task.evaluate.__doc__ or "Score predictions against the truth."
    return click.command("evaluate", help=_help(doc))(
        _decorate(evaluate, _shared("evaluate", task) + task.options("evaluate")))


def _output_names(images: list[Path], spec: str) -> list[str]:
    """One unique output name per image: its stem, or its folder's name when the glob's
    wildcard is in a folder (``data/*/image.tif``: ``data/a/image.tif`` -> ``a``, which pairs
    with ``data/a/cells.csv``, however many folders match) or when stems repeat; else folder
    and stem (``a_image``)."""
    import glob

    stems, folders = [p.stem for p in images], [p.parent.name for p in images]
    order = (folders, stems) if glob.has_magic(str(Path(spec).parent)) else (stems, folders)
    for names in (*order, [f"{p.parent.name}_{p.stem}" for p in images]):
        if len(set(names)) == len(names):
            return names
    return [f"{i:05d}_{p.stem}" for i, p in enumerate(images)]


def _check_model(task: Task, model: str) -> None:
    """``--model``: one of the task's bundled models or an existing checkpoint file; otherwise
    one line listing this task's models (not every task's)."""
    from ..errors import UserError

    if model in task.models or Path(model).is_file():
        return
    what = "a folder" if Path(model).is_dir() else "not a file"
    raise UserError(f"unknown model '{model}' for {task.name}: {what}, and not one of "
                    f"{', '.join(task.models)} (or give a checkpoint from '{task.name} train')")


def _existing(path: str, option: str) -> Path:
    from ..errors import UserError

    path = Path(path)
    if not path.exists():
        raise UserError(f"{option}: no such file or folder: {path}")
    return path


def task_group(task: Task) -> click.Group:
    """``proxscope <task>`` with the four verbs."""
    group = click.Group(task.name, help=task.summary)
    group.add_command(_write_command(task, "simulate", out_is_dir=True))
    group.add_command(_write_command(task, "train", out_is_dir=False))
    group.add_command(_predict_command(task))
    group.add_command(_evaluate_command(task))
    return group


def bench_command(task: Task) -> click.Command:
    """``proxscope bench <task> [--quick] --json PATH``."""

    def bench(json_path, quick, **kwargs):
        from ..benchmarking import write_result
        from ..data.io import check_writable

        path = check_writable(json_path, is_dir=False)
        kwargs = _prepare(kwargs)
        results = task.bench(quick=quick, **kwargs)
        click.echo(f"results: {write_result(path, task.name, quick, results)}")

    options = [
        _opt("--quick", is_flag=True, help="Small protocol (about 10 minutes on 2 CPU cores)."),
        _opt("--json", "json_path", required=True, type=click.Path(dir_okay=False),
             help="Result file (JSON with machine, threads and versions)."),
        SEED, DEVICE, THREADS, QUIET,
    ] + task.options("bench")
    doc = task.bench.__doc__ or "Benchmark."
    return click.command(task.name, help=_help(doc))(_decorate(bench, options))
