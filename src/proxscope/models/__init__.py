"""Models and the registry of bundled pretrained weights.

``load(name_or_path)`` returns a model in eval mode: ``name`` is a file
``proxscope/weights/<name>.safetensors`` shipped with the package (see ``available()``), anything
else is read as a checkpoint path. Weights are read offline; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def available() -> list[str]:
    """Names of the bundled pretrained models."""
    return sorted(p.name.removesuffix(".safetensors") for p in WEIGHTS_DIR.glob("*.safetensors"))


def resolve(name_or_path: str | Path) -> Path:
    """Path of a bundled model name or an existing checkpoint file."""
    from ..errors import CheckpointError

    candidate = WEIGHTS_DIR / f"{name_or_path}.safetensors"
    if candidate.is_file():
        return candidate
    path = Path(name_or_path)
    if path.is_file():
        return path
    names = ", ".join(available()) or "none bundled"
    raise CheckpointError(f"unknown model '{name_or_path}': not a file, and not one of: {names}")


def load(name_or_path: str | Path, device="cpu", expected: type | None = None):
    """Load a bundled model by name or a checkpoint by path; returns (model, extra metadata)."""
    from ..checkpoint import build_model, read_checkpoint

    path = resolve(name_or_path)
    ckpt = read_checkpoint(path, device=device)
    model = build_model(ckpt, expected=expected, source=str(name_or_path))
    return model.to(device).eval(), ckpt.extra
