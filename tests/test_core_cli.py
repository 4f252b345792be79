"""CLI plumbing: help everywhere, version, one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from proxscope import __version__
from proxscope.cli import main
from proxscope.models import available
from proxscope.tasks import REGISTRY, get_task
from proxscope.tasks.base import Task
from proxscope.tasks.commands import VERBS, bench_command, task_group


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("args", [[], ["bench"], ["demo"], *[[task] for task in REGISTRY]])
def test_help_of_every_group(args, capsys):
    assert main([*args, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: proxscope")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_task_implements_every_verb_and_a_benchmark(name):
    task = get_task(name)
    assert task.name == name
    for method in ("simulate", "train", "predictor", "bench", "demo"):
        assert getattr(type(task), method) is not getattr(Task, method), f"{name} lacks {method}"
    assert type(task).evaluate_pair is not Task.evaluate_pair or type(task).evaluate is not Task.evaluate
    group = task_group(task)
    assert sorted(group.commands) == sorted(VERBS)
    shared = {"simulate": {"out", "seed", "quiet"},
              "train": {"out", "model", "steps", "lr", "batch_size", "seed", "device", "threads",
                        "resume", "quiet"},
              "predict": {"inputs", "out", "model", "seed", "device", "threads", "quiet"},
              "evaluate": {"pred", "truth", "out", "quiet"}}
    for verb, names in shared.items():
        assert names <= {p.name for p in group.commands[verb].params}, (name, verb)
    assert {"quick", "json_path", "seed", "device", "threads", "quiet"} <= {
        p.name for p in bench_command(task).params}
    assert set(task.models) <= set(available())


def test_unknown_command_is_one_line_exit_2(capsys):
    assert main(["nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_help_does_not_import_torch():
    code = "import sys; from proxscope.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def _bad_inputs(tmp_path):
    """(case name, image path, model) for each class of user mistake."""
    import numpy as np
    import tifffile

    nan = np.ones((32, 32), np.float32)
    nan[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 32), np.float32))
    tifffile.imwrite(tmp_path / "5d.tif", np.zeros((2, 2, 3, 32, 32), np.float32), photometric="minisblack")
    tifffile.imwrite(tmp_path / "good.tif", np.random.default_rng(0).random((32, 32), np.float32))
    (tmp_path / "garbage.tif").write_bytes(b"\x00\x01 not an image")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    return [
        ("missing file", tmp_path / "missing.tif", "runet"),
        ("unreadable file", tmp_path / "garbage.tif", "runet"),
        ("NaN", tmp_path / "nan.tif", "runet"),
        ("empty image", tmp_path / "empty.tif", "runet"),
        ("wrong shape", tmp_path / "5d.tif", "runet"),
        ("unknown model", tmp_path / "good.tif", "no-such-model"),
        ("corrupt checkpoint", tmp_path / "good.tif", str(tmp_path / "corrupt.safetensors")),
    ]


def test_each_class_of_user_mistake_is_one_line_exit_2_and_no_output(tmp_path, capsys):
    for case, image, model in _bad_inputs(tmp_path):
        out = tmp_path / "out" / "mask.tif"
        code = main(["seg", "predict", str(image), "--model", model, "--out", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, case
        assert err.startswith("error:") and err.count("\n") == 1, (case, err)
        assert "Traceback" not in err
        assert not out.exists(), case
        assert not (out.parent.exists() and list(out.parent.glob("*.part"))), case
