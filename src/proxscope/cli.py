"""Command line: ``proxscope <task> <verb> [options]``, ``proxscope bench <task>``, ``proxscope demo``.

Task groups live in ``proxscope.tasks.<task>.cli`` (a click group named ``group`` and a command
named ``bench``) and are imported only when used, so ``--help`` stays instant. User mistakes
(:class:`proxscope.errors.UserError`, click usage errors) print one line and exit with code 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from . import __version__

TASKS = {
    "spots": "FluoroSpot/ELISpot cell detection and secretion profiles (SpotNet, ConvNet, APG).",
    "spod": "SPoD super-resolution recovery of polarization stacks (SPoD-Net, LISTA-Net, FISTA).",
    "cells": "Cell detection by compressed-sensing output encoding (CNNCS, ECNNCS-1/2).",
    "seg": "Noise-robust segmentation with a TV-regularized softmax (UNet/RUNet, SegNet/RSegNet).",
}


def _task_module(task: str):
    try:
        return importlib.import_module(f"proxscope.tasks.{task}.cli")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"proxscope.tasks.{task}"):
            return None
        raise


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use. ``attr`` names the object to take
    from each task's cli module ('group' for task groups, 'bench' for benchmarks)."""

    def __init__(self, *args, attr: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.attr = attr

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(TASKS))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None or name not in TASKS:
            return command
        module = _task_module(name)
        return getattr(module, self.attr, None) if module is not None else None

    def format_commands(self, ctx, formatter):
        # Short help from TASKS, so listing commands imports nothing.
        rows = [(name, TASKS[name]) for name in TASKS]
        rows += [
            (name, cmd.get_short_help_str())
            for name, cmd in self.commands.items()
        ]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, attr="group", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="proxscope")
def cli():
    """proxscope: model-based deep learning for biomedical imaging.

    \b
    Examples:
      proxscope demo --out out/demo
      proxscope spots simulate --cells 250 --size 256 --out data/spots
      proxscope bench spod --quick --json benchmarks/results/spod-quick.json
    """


@cli.group(cls=LazyGroup, attr="bench")
def bench():
    """Benchmarks that reproduce each seed's claims: proxscope bench <task> [--quick] --json PATH."""


@cli.command()
@click.option("--out", default="out/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--tasks", default=",".join(TASKS), show_default=True, help="Comma-separated tasks.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def demo(out, tasks, quiet):
    """Run every task on bundled weights and simulated data; write OUT/report.html."""
    from .report import run_demo

    path = run_demo(out, [t.strip() for t in tasks.split(",") if t.strip()], quiet=quiet)
    click.echo(f"report: {path}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    from .errors import UserError

    try:
        cli.main(args=argv, prog_name="proxscope", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
