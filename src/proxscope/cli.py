"""Command line: ``proxscope <task> <verb> [options]``, ``proxscope bench <task>``, ``proxscope demo``.

Task commands are built from the task registry (:mod:`proxscope.tasks`) by one builder
(:mod:`proxscope.tasks.commands`) and a task is imported only when used, so ``--help`` stays
instant. User mistakes (:class:`proxscope.errors.UserError`, click usage errors) print one line
and exit with code 2.
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .tasks import REGISTRY


class LazyGroup(click.Group):
    """A group whose task subcommands are built from the task registry on first use:
    ``kind`` 'group' gives ``proxscope <task> ...``, 'bench' gives ``proxscope bench <task>``."""

    def __init__(self, *args, kind: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = kind

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(REGISTRY))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None or name not in REGISTRY:
            return command
        from .tasks import get_task
        from .tasks.commands import bench_command, task_group

        task = get_task(name)
        return task_group(task) if self.kind == "group" else bench_command(task)

    def format_commands(self, ctx, formatter):
        # Short help from the registry, so listing commands imports no task.
        rows = [(name, summary) for name, (_, summary) in REGISTRY.items()]
        rows += [(name, cmd.get_short_help_str()) for name, cmd in self.commands.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, kind="group", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="proxscope")
def cli():
    """proxscope: model-based deep learning for biomedical imaging.

    \b
    Examples:
      proxscope demo --out out/demo
      proxscope spots simulate --cells 250 --size 256 --out data/spots
      proxscope bench spod --quick --json benchmarks/results/spod-quick.json
    """


@cli.group(cls=LazyGroup, kind="bench", short_help="Reproduce a seed's claims: bench <task> [--quick].")
def bench():
    """Benchmarks that reproduce each seed's claims: proxscope bench <task> [--quick] --json PATH."""


@cli.command(short_help="All tasks on bundled weights -> OUT/report.html.")
@click.option("--out", default="out/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--tasks", default=",".join(REGISTRY), show_default=True, help="Comma-separated tasks.")
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
