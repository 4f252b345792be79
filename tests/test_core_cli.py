"""CLI plumbing: help everywhere, version, one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from proxscope import __version__
from proxscope.cli import TASKS, main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("args", [[], ["bench"], ["demo"], *[[task] for task in TASKS]])
def test_help_of_every_group(args, capsys):
    assert main([*args, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: proxscope")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_has_verbs_and_a_benchmark(task, capsys):
    assert main([task, "--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("simulate", "train", "predict", "evaluate"):
        assert verb in out, f"{task} lacks {verb}"
    assert main(["bench", task, "--help"]) == 0
    assert "--quick" in capsys.readouterr().out


def test_unknown_command_is_one_line_exit_2(capsys):
    assert main(["nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_help_does_not_import_torch():
    code = "import sys; from proxscope.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")
