"""Models in and out of the run store: load a run's model, export it as one file, read an uploaded one.

An exported model is a plain `torch.save` of a dict of tensors and plain values:
    {"format": "cifar10-studio-model", "version": 1, "config": {...TrainConfig...}, "classes": [...],
     "state_dict": {...}, "epoch": N, "test_acc": ...}
so `torch.load(path, weights_only=True)` reads it without this app (the Runs page shows the lines).
Everything a user hands in is loaded with `weights_only=True`; anything that is not such a file, or whose
weights do not fit the config it carries, raises CheckpointError with a sentence saying what is wrong.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cifar_app.config import ConfigError, TrainConfig
from cifar_app.data.formats import CLASSES
from cifar_app.model.network import DynamicConvNet, build_model, with_temperature
from cifar_app.store.runs import Run

FORMAT = "cifar10-studio-model"
VERSION = 1
MAX_CHECKPOINT_BYTES = 512 * 2**20


class CheckpointError(ValueError):
    """A file that cannot be used as a model; the message says why."""


@dataclass
class LoadedModel:
    model: DynamicConvNet
    config: TrainConfig
    classes: tuple[str, ...]
    source: str  # e.g. "run 20261127-101500-seed (best, epoch 14)" or "uploaded my_model.pt"
    epoch: int | None = None


def export_payload(run: Run, which: str = "best") -> dict[str, Any]:
    """The portable form of a run's checkpoint: weights + config, no optimizer state."""
    saved = run.load_checkpoint(which)
    rows = {r["epoch"]: r for r in run.metrics()}
    temperature = saved.get("temperature", 1.0)
    # the attention temperature is in the state_dict, so load_state_dict alone restores it (older checkpoints
    # kept it beside the weights: it is put in)
    state = with_temperature(saved["model"], temperature, TrainConfig.from_dict(saved["config"]).blocks)
    return {
        "format": FORMAT, "version": VERSION, "config": saved["config"], "classes": list(saved.get("classes", CLASSES)),
        "state_dict": state, "epoch": saved["epoch"], "temperature": temperature,
        "test_acc": (rows.get(saved["epoch"]) or {}).get("test_acc"),
    }


def export_bytes(run: Run, which: str = "best") -> bytes:
    buffer = io.BytesIO()
    torch.save(export_payload(run, which), buffer)
    return buffer.getvalue()


def _model_from(payload: dict[str, Any], device: torch.device | str, source: str) -> LoadedModel:
    if not isinstance(payload, dict):
        raise CheckpointError(f"{source} holds a {type(payload).__name__}, not a CIFAR-10 Studio model.")
    # a run's own checkpoint (model/config) or an exported model (state_dict/config)
    state = payload.get("state_dict", payload.get("model"))
    if not isinstance(payload.get("config"), dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"{source} is a PyTorch file but not a CIFAR-10 Studio model: it lacks the config and weights this "
            "app saves (keys found: " + ", ".join(map(str, list(payload)[:8])) + ")."
        )
    try:
        config = TrainConfig.from_dict(payload["config"]).check()
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{source} carries a configuration this app cannot build: {error}") from error
    model = build_model(config, device)
    try:
        model.load_weights(state, float(payload.get("temperature", 1.0)))
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(
            f"{source}: its weights do not match the network its config describes ({first})."
        ) from error
    model.eval()
    classes = tuple(payload.get("classes") or CLASSES)
    return LoadedModel(model, config, classes, source, payload.get("epoch"))


def load_run_model(run: Run, which: str = "best", device: torch.device | str = "cpu") -> LoadedModel:
    """A run's best (or last) model, ready for inference."""
    if not run.has_checkpoint(which):
        which = "last"
    try:
        payload = run.load_checkpoint(which, map_location=device)
    except (OSError, RuntimeError) as error:  # missing, or a truncated file from a killed process
        raise CheckpointError(f"run {run.name} has no readable checkpoint ({error}).") from error
    return _model_from(payload, device, f"run {run.name} ({which}, epoch {payload.get('epoch')})")


def load_model_file(data: bytes | Path, device: torch.device | str = "cpu", name: str = "the file") -> LoadedModel:
    """A model from an uploaded or local file; CheckpointError for anything that is not one."""
    raw = Path(data).read_bytes() if isinstance(data, Path) else data
    if len(raw) == 0:
        raise CheckpointError(f"{name} is empty.")
    if len(raw) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{name} is {len(raw) / 2**20:.0f} MB; models of this app are far smaller.")
    try:
        payload = torch.load(io.BytesIO(raw), map_location=device, weights_only=True)
    except Exception as error:  # not a zip/pickle, truncated, or objects weights_only refuses
        raise CheckpointError(
            f"{name} is not a readable PyTorch checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:200]})."
        ) from error
    return _model_from(payload, device, f"uploaded {name}")
