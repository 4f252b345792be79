"""The one checkpoint format of proxscope: a single safetensors file.

Tensors: the model's ``state_dict`` (plus, for training resume files, optimizer state under
``optim.*``). Metadata (strings): ``format`` (= "proxscope"), ``format_version``, ``model_class``
("proxscope.models.<module>:<Class>"), ``config`` (JSON of the model's config dataclass) and
``extra`` (JSON: detection thresholds, training history, ...). Writes are atomic.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from .errors import CheckpointError

FORMAT = "proxscope"
FORMAT_VERSION = 1


def _class_path(model) -> str:
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"


def save_checkpoint(
    path: str | Path,
    model,
    extra: dict[str, Any] | None = None,
    tensors: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` (an nn.Module with a dataclass ``config``) to ``path`` atomically.

    ``tensors``: additional named tensors (e.g. optimizer state) stored beside the weights.
    """
    from safetensors.torch import save_file

    from .data.io import atomic_path

    config = model.config
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for key, value in (tensors or {}).items():
        state[key] = value.detach().contiguous().cpu()
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_class": _class_path(model),
        "config": json.dumps(config),
        "extra": json.dumps(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


@dataclasses.dataclass
class Checkpoint:
    """What :func:`read_checkpoint` returns."""

    tensors: dict[str, Any]
    model_class: str
    config: dict[str, Any]
    extra: dict[str, Any]

    def model_state(self) -> dict[str, Any]:
        return {k: v for k, v in self.tensors.items() if not k.startswith("optim.")}


def read_checkpoint(path: str | Path, device="cpu") -> Checkpoint:
    """Read a checkpoint; any problem is a :class:`CheckpointError` with a one-line message."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable proxscope checkpoint ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a proxscope checkpoint (no '{FORMAT}' metadata)")
    version = int(metadata.get("format_version", "0"))
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, this proxscope reads {FORMAT_VERSION}"
        )
    try:
        config = json.loads(metadata["config"])
        extra = json.loads(metadata.get("extra", "{}"))
        model_class = metadata["model_class"]
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({exc})") from None
    return Checkpoint(tensors, model_class, config, extra)


def build_model(ckpt: Checkpoint, expected: type | tuple[type, ...] | None = None,
                source: str = "checkpoint"):
    """Instantiate the checkpoint's model class from its config and load its weights;
    ``expected``: the class (or classes) the model must be."""
    module_name, _, qualname = ckpt.model_class.partition(":")
    if not module_name.startswith("proxscope."):
        raise CheckpointError(f"{source}: refusing to import model class {ckpt.model_class!r}")
    try:
        cls = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError):
        raise CheckpointError(f"{source}: unknown model class {ckpt.model_class!r}") from None
    if expected is not None and not issubclass(cls, expected):
        raise CheckpointError(
            f"{source}: holds a {cls.__name__}, expected a "
            + " or ".join(c.__name__ for c in (expected if isinstance(expected, tuple) else (expected,)))
        )
    try:
        model = cls.from_config(ckpt.config)
        model.load_state_dict(ckpt.model_state())
    except (TypeError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source}: weights do not match {cls.__name__} ({first})") from None
    return model


#: The one slot for detection settings tuned on validation images (``extra["detection"]``).
DETECTION_DEFAULTS = {"threshold": 0.0, "sigma": 0.0, "vote_threshold": None}


def detection_settings(extra: dict[str, Any], **defaults) -> dict[str, Any]:
    """Detection settings a checkpoint stores: ``threshold`` (score threshold), ``sigma`` (LoG /
    smoothing scale of the score map, px), ``vote_threshold`` (CNNCS back-projection votes).

    Read from ``extra["detection"]``; older checkpoints kept them at the top level of ``extra``
    (``threshold``, ``detect_sigma``, ``vote_threshold``) and are read the same. ``defaults``
    replaces :data:`DETECTION_DEFAULTS` for keys the checkpoint lacks."""
    legacy = {"threshold": "threshold", "sigma": "detect_sigma", "vote_threshold": "vote_threshold"}
    stored = extra.get("detection") or {k: extra[old] for k, old in legacy.items() if old in extra}
    return DETECTION_DEFAULTS | defaults | stored


#: ``extra`` key of the object diameter (px) a model was trained on (``--diameter`` rescales
#: inputs to it); ``extra["trained_on"]``: one line on the training data (data, modality,
#: channels) shown in ``--help`` and the README.
DIAMETER_KEY = "object_diameter_px"


def trained_diameter(extra: dict[str, Any]) -> float | None:
    """The object diameter in pixels a checkpoint was trained on (``extra[DIAMETER_KEY]``), or
    None for a checkpoint that does not record it (``--diameter`` then cannot rescale)."""
    value = extra.get(DIAMETER_KEY)
    return None if value is None else float(value)


def update_extra(path: str | Path, **updates) -> Path:
    """Rewrite a checkpoint's ``extra`` metadata with ``updates`` merged in (weights unchanged),
    atomically; e.g. to record ``object_diameter_px`` in a bundled model without retraining."""
    from safetensors.torch import save_file

    from .data.io import atomic_path

    ckpt = read_checkpoint(path)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_class": ckpt.model_class,
        "config": json.dumps(ckpt.config),
        "extra": json.dumps(ckpt.extra | updates),
    }
    with atomic_path(path) as tmp:
        save_file(ckpt.tensors, str(tmp), metadata=metadata)
    return Path(path)
