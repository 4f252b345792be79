"""Trainer: resume after a crash ends with the same weights; best checkpoint; checkpoints load."""

import pytest
import torch

from proxscope.checkpoint import read_checkpoint, save_checkpoint
from proxscope.errors import CheckpointError, UserError
from proxscope.models import load
from proxscope.models.lista import LISTA
from proxscope.train import TrainConfig, Trainer

MATRIX = torch.randn(8, 20, generator=torch.Generator().manual_seed(0))


def _sample(rng):
    x = torch.zeros(4, 20)
    idx = torch.from_numpy(rng.integers(0, 20, size=(4, 2)))
    x.scatter_(1, idx, torch.from_numpy(rng.uniform(0.5, 1.5, size=(4, 2))).float())
    return x @ MATRIX.T, x


def _loss(model, batch):
    y, x = batch
    return (model(y) - x).square().mean()


def _trainer(out, steps, val=True):
    torch.manual_seed(0)
    model = LISTA.from_solver(MATRIX, lam=0.05, n_layers=3)
    y_val, x_val = _sample(__import__("numpy").random.default_rng(123))
    validate = (lambda m: float(_loss(m, (y_val, x_val)))) if val else None
    config = TrainConfig(steps=steps, lr=1e-2, val_every=5, ckpt_every=5, seed=3, quiet=True)
    return Trainer(model, _loss, _sample, config, out, validate=validate, extra={"note": "test"})


def test_resume_after_crash_gives_identical_weights(tmp_path):
    full = _trainer(tmp_path / "full.ckpt", 20)
    full.fit()

    crashed = _trainer(tmp_path / "crash.ckpt", 20)
    crashed.config.steps = 10  # "killed" after 10 steps: the resume file holds step 10
    crashed.fit()
    resumed = _trainer(tmp_path / "crash.ckpt", 20)
    resumed.fit(resume=True)
    assert resumed.step == 20
    expected, got = full.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_training_lowers_loss_and_keeps_best(tmp_path):
    trainer = _trainer(tmp_path / "best.ckpt", 30)
    history = trainer.fit()
    vals = [h["val"] for h in history if "val" in h]
    assert min(vals) < vals[0]
    model, extra = load(tmp_path / "best.ckpt")
    assert extra["note"] == "test" and isinstance(model, LISTA)
    y, x = _sample(__import__("numpy").random.default_rng(123))
    assert float(_loss(model, (y, x))) == pytest.approx(min(vals), rel=1e-5)
    stored = [h["val"] for h in extra["history"] if "val" in h]  # up to and incl. its own record
    assert stored[-1] == min(vals) and stored == vals[: len(stored)]


def _input_gradient_score(model):
    """A validation score from input gradients (as a heatmap score is): mean |d loss / d y|."""
    y, x = _sample(__import__("numpy").random.default_rng(123))
    y.requires_grad_(True)
    (grad,) = torch.autograd.grad(_loss(model, (y, x)), y)
    return float(grad.abs().mean())


def test_validation_with_input_gradients(tmp_path):
    trainer = _trainer(tmp_path / "plain.ckpt", 5)
    trainer.validate = _input_gradient_score
    with pytest.raises(RuntimeError, match="does not require grad"):
        trainer.fit()  # default: validation under torch.no_grad

    trainer = _trainer(tmp_path / "grad.ckpt", 10)
    trainer.validate = _input_gradient_score
    trainer.config.validation_grad = True
    vals = [h["val"] for h in trainer.fit() if "val" in h]
    assert len(vals) == 2 and min(vals) > 0
    model, _ = load(tmp_path / "grad.ckpt")
    assert _input_gradient_score(model.eval()) == pytest.approx(min(vals), rel=1e-5)


def test_resume_without_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no resume file"):
        _trainer(tmp_path / "none.ckpt", 5).fit(resume=True)


def test_resume_file_of_another_model_or_task_names_the_mismatch(tmp_path):
    from proxscope.models.segmentation import build

    out = tmp_path / "m.ckpt"
    _trainer(out, 5).fit()  # leaves m.ckpt.resume of a LISTA

    def seg_trainer(task="seg", **config):
        model = build("unet", **{"depth": 1, "base_channels": 2} | config)

        def sample(rng):
            return torch.zeros(1, model.config.in_channels, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long)

        def loss(m, batch):
            return -m(batch[0]).gather(1, batch[1][:, None]).log().mean()

        return Trainer(model, loss, sample, TrainConfig(steps=2, ckpt_every=1, quiet=True), out,
                       extra={"task": task})

    with pytest.raises(UserError, match=r"m.ckpt.resume: resume file of a LISTA, this run trains a UNet"):
        seg_trainer().fit(resume=True)
    seg_trainer().fit()  # now a UNet resume file of task seg
    with pytest.raises(UserError, match="resume file of task seg, this run is task cells"):
        seg_trainer(task="cells").fit(resume=True)
    with pytest.raises(UserError, match=r"with base_channels 2 \(now 4\)"):
        seg_trainer(base_channels=4).fit(resume=True)
    with pytest.raises(UserError, match=r"in_channels 3 \(now 1\)"):
        seg_trainer(in_channels=1).fit(resume=True)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    model = LISTA.from_solver(MATRIX, lam=0.1, n_layers=2)
    path = save_checkpoint(tmp_path / "m.safetensors", model, extra={"threshold": 0.5})
    loaded, extra = load(path)
    assert extra == {"threshold": 0.5}
    y = torch.randn(3, 8)
    assert torch.equal(loaded(y), model.eval()(y))
    assert read_checkpoint(path).config["n_layers"] == 2

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable proxscope checkpoint"):
        load(corrupt)
    with pytest.raises(CheckpointError, match="unknown model"):
        load(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="expected a"):
        load(path, expected=torch.nn.Conv2d)


def test_checkpoint_with_mismatched_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    model = LISTA.from_solver(MATRIX, lam=0.1, n_layers=2)
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    tensors = load_file(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors["net.step"] = torch.zeros(7)
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="weights do not match"):
        load(path)


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_core_train import _trainer
import torch.distributed as dist
trainer = _trainer({out!r}, 6, val=False)
trainer.fit()
torch.save(trainer.model.state_dict(), {out!r} + f".rank{{dist.get_rank()}}.pt")
dist.destroy_process_group()
"""


def test_data_parallel_under_torchrun_keeps_ranks_in_sync(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = str(tmp_path / "ddp.ckpt")
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=out))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd.append(str(script))
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    rank0, rank1 = (torch.load(f"{out}.rank{r}.pt") for r in (0, 1))
    single = _trainer(tmp_path / "single.ckpt", 6, val=False)
    single.fit()
    initial = LISTA.from_solver(MATRIX, lam=0.05, n_layers=3).state_dict()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name  # gradients were averaged
    changed = [n for n in rank0 if not torch.equal(rank0[n], initial[n])]
    assert changed  # training happened
    # two ranks see different batches, so the result differs from one process
    assert any(not torch.equal(rank0[n], single.model.state_dict()[n]) for n in changed)
    assert (tmp_path / "ddp.ckpt").is_file() and not list(tmp_path.glob("*.part"))


def test_plateau_divides_the_learning_rate_by_ten(tmp_path):
    """Validation that never improves after the first call: with patience 2, the learning rate
    falls 10x after validations 3 and 5 (calls 2-3 and 4-5 are stale)."""
    model = torch.nn.Linear(2, 1)
    model.config = {"in_features": 2}
    values = iter([1.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    trainer = Trainer(model, lambda m, b: m(b).pow(2).mean(), lambda rng: torch.ones(4, 2),
                      TrainConfig(steps=6, lr=1.0, val_every=1, quiet=True, plateau_patience=2),
                      tmp_path / "m.safetensors", validate=lambda m: next(values))
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_torch_device_in_config_is_stored_by_name(tmp_path):
    """Benchmarks pass a resolved torch.device; the resume file's JSON must still be written."""
    torch.manual_seed(0)
    model = LISTA.from_solver(MATRIX, lam=0.05, n_layers=3)
    config = TrainConfig(steps=5, lr=1e-2, val_every=5, ckpt_every=5, quiet=True,
                         device=torch.device("cpu"))
    assert config.device == "cpu"
    trainer = Trainer(model, _loss, _sample, config, tmp_path / "dev.ckpt")
    trainer.fit()
    assert read_checkpoint(tmp_path / "dev.ckpt.resume").extra["train_config"]["device"] == "cpu"


def test_collapse_guard_restores_the_best_weights_and_halves_the_lr(tmp_path):
    """restore_factor: a validation 4x the best one (a collapse) brings the best weights back,
    clears Adam's moments and halves the learning rate; a small rise only counts as a plateau."""
    trainer = _trainer(tmp_path / "guard.ckpt", 20)
    trainer.config.restore_factor = 1.1
    values = iter([1.0, 0.5, 0.52, 2.0])  # steps 5, 10, 15, 20
    trainer.validate = lambda m: next(values)
    history = trainer.fit()
    restored = [h["step"] for h in history if h.get("restored")]
    assert restored == [20]
    best, _ = load(tmp_path / "guard.ckpt")
    for name, value in best.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
    assert not trainer.optimizer.state


def test_collapse_guard_rejects_a_factor_of_one_and_catches_nan(tmp_path):
    with pytest.raises(ValueError, match="restore_factor"):
        TrainConfig(restore_factor=1.0)
    trainer = _trainer(tmp_path / "nan.ckpt", 10)
    trainer.config.restore_factor = 1.1
    values = iter([0.5, float("nan")])
    trainer.validate = lambda m: next(values)
    assert [h["step"] for h in trainer.fit() if h.get("restored")] == [10]


def test_collapse_guard_by_level_catches_a_collapse_near_the_start(tmp_path):
    """Best 0.96, then 1.0 (a dead all-zero output scores 1): within factor 1.1, caught by the
    level 0.999; a value just below the level is only a plateau."""
    trainer = _trainer(tmp_path / "level.ckpt", 15)
    trainer.config.restore_factor, trainer.config.restore_level = 1.1, 0.999
    values = iter([0.96, 0.998, 1.0])
    trainer.validate = lambda m: next(values)
    assert [h["step"] for h in trainer.fit() if h.get("restored")] == [15]
