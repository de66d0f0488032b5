"""TrainConfig: every hyperparameter of a run, with the coursework's defaults, and the presets.

One object describes a run from the CLI, the dashboard and the run store alike. `validate()` turns
impossible values into one readable message per problem; `to_json`/`from_json` round-trip it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from cifar_app.shape import summarize_shape

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
IMPLS = ("auto", "loop", "batched", "persample")
MAX_PARAMS = 200_000_000  # 0.8 GB of fp32 weights, 3x that with Adam's state: beyond it a slider typo, not a plan
PRECISIONS = ("auto", "fp32", "bf16")
MAX_BUDGET_S = 30 * 86_400  # a month: beyond it a typo, not a plan
LABELS_NAME = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,59}(?:@\d{1,6})?)?$")  # blank, NAME or NAME@VERSION


def default_data_dir() -> str:
    return os.environ.get("CIFAR_DATA_DIR", "data")


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(hours?|h|minutes?|mins?|m|seconds?|secs?|s)?", re.I)
_UNIT_S = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str | float) -> float:
    """Seconds from '5m', '90s', '1h30m', '4.5 min' or a bare number of seconds; ValueError with a sentence
    otherwise. '0' is no budget."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        cleaned = text.strip().lower()
        parts = list(_DURATION_PART.finditer(cleaned))
        if not cleaned or "".join(p.group(0) for p in parts).replace(" ", "") != cleaned.replace(" ", ""):
            raise ValueError(f"{text!r} is not a duration: write it as 5m, 90s, 1h30m or a number of seconds.")
        if len(parts) > 1 and any(p.group(2) is None for p in parts):
            raise ValueError(f"{text!r} is not a duration: give every number its unit, as in 1h30m.")
        seconds = sum(float(p.group(1)) * _UNIT_S[(p.group(2) or "s")[0]] for p in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not a duration: a time budget is zero (off) or more.")
    return seconds


def knob(default: Any, label: str, help: str) -> Any:
    """A config field with the label of its dashboard widget and the help text the widget and the CLI show.
    A callable default is a factory (evaluated per instance)."""
    metadata = {"label": label, "help": help}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every knob of a training run. The defaults are the coursework's `seed` recipe."""

    # data
    data_dir: str = knob(default_data_dir, "Data folder", "where CIFAR-10 is (or goes)")
    download: bool = knob(False, "Download if absent", "download CIFAR-10 with torchvision if absent")
    train_subset: int = knob(0, "Training subset (images, 0 = all)", "train on the first N shuffled images (0 = all)")
    val_size: int = knob(0, "Validation split (images)", "images held out of training for validation (0 = none)")
    augment: bool = knob(False, "Augment: random crop and flip", "random crop (padding 4) and horizontal flip")
    cutout: int = knob(0, "Cutout (pixels)", "side of a random square masked per training image (0 = off)")
    labels: str = knob(
        "", "Training labels",
        "a label set kept beside the data to train on instead of the dataset's own labels (NAME, or NAME@VERSION for "
        "an earlier version; blank = the dataset's own; python -m cifar_app.labels list)",
    )
    folds: int = knob(
        0, "Cross-validation folds",
        "split the training images into K folds and hold one out (0 = off): the held-out fold is the validation "
        "split, so its predictions are out of sample (K-fold label-error search)",
    )
    fold: int = knob(0, "Held-out fold", "which of the K folds is held out (0 to K-1)")
    # model
    blocks: int = knob(11, "Blocks", "number of dynamic-convolution blocks")
    k: int = knob(4, "K: convolutions mixed per block", "convolutions mixed per block (K)")
    width: int = knob(
        32, "Width (channels of the first stage)", "channels of the first blocks; doubles at each pooling"
    )
    attn_temperature: float = knob(
        1.0, "Attention temperature at epoch 1", "softmax temperature of the attention at epoch 1"
    )
    attn_anneal_epochs: int = knob(
        0, "Anneal the temperature over (epochs)", "epochs to anneal the temperature to 1 (0 = fixed)"
    )
    zero_init_bn: bool = knob(False, "Start residual blocks as identity", "start each residual block as the identity")
    # optimisation
    epochs: int = knob(25, "Epochs", "passes over the training set")
    batch_size: int = knob(256, "Batch size", "images per optimiser step")
    optimizer: str = knob("adam", "Optimizer", "adam (coupled L2), adamw or sgd (Nesterov momentum)")
    lr: float = knob(1e-3, "Learning rate", "learning rate (peak rate for onecycle)")
    weight_decay: float = knob(5e-4, "Weight decay", "weight decay")
    decay_all: bool = knob(
        True, "Decay BatchNorm and biases too", "decay BatchNorm and bias parameters too, as the coursework's Adam did"
    )
    momentum: float = knob(0.9, "SGD momentum", "SGD momentum")
    schedule: str = knob("none", "Learning-rate schedule", "learning-rate schedule: none, cosine or onecycle")
    warmup_epochs: float = knob(0.0, "Warm-up (epochs)", "linear warm-up (cosine) or rise (onecycle) in epochs")
    label_smoothing: float = knob(0.0, "Label smoothing", "label smoothing of the cross-entropy loss")
    tta_flip: bool = knob(False, "Test-time flip (TTA)", "average predictions with the flipped image at test time")
    time_budget: float = knob(
        0.0, "Train for (a time budget)",
        "a time budget in seconds (the command line also takes 5m, 90s, 1h30m; 0 = off): the run measures this "
        "machine's pace and sets its epochs so that the whole schedule, evaluations included, ends in the budget",
    )
    # run
    seed: int = knob(0, "Random seed", "random seed (data order, init, augmentation)")
    device: str = knob("auto", "Device", "auto, cpu, cuda or mps")
    impl: str = knob(
        "auto", "Dynamic-conv implementation", "dynamic-conv implementation: auto, loop, batched, persample"
    )
    precision: str = knob(
        "auto", "Precision", "auto (bf16 on CUDA and on CPUs with native bf16), fp32 or bf16 autocast"
    )
    compile: bool = knob(False, "torch.compile", "torch.compile the model (falls back if it fails)")
    cuda_graphs: bool = knob(
        True, "CUDA graph of the training step", "on CUDA, replay the whole training step as one CUDA graph (falls back if it fails)"
    )
    threads: int = knob(
        0, "CPU threads of the training process",
        "torch threads the training process uses on a CPU (0 = one per core). One per core is fastest even with the "
        "app open in a browser on the same 2-core machine (docs/performance.md); fewer leave cores to other work",
    )
    eval_every: int = knob(1, "Test every (epochs)", "evaluate on the test set every N epochs (and the last)")
    records: bool = knob(
        True, "Record how each image is learned",
        "keep every training and test image's true-class probability at each epoch (Dynamics page; a few MB a run)",
    )
    name: str = knob("", "Run name", "run name (blank = generated)")

    def validate(self) -> list[str]:
        """Every impossible value, as a sentence a user can act on. Empty when the config can run."""
        problems = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        need(self.epochs >= 1, f"epochs must be at least 1 (got {self.epochs}).")
        need(self.batch_size >= 1, f"batch size must be at least 1 (got {self.batch_size}).")
        need(self.batch_size <= 8192, f"batch size {self.batch_size} is too large (at most 8192).")
        need(self.lr > 0, f"learning rate must be positive (got {self.lr}).")
        need(self.lr <= 10, f"learning rate {self.lr} is far too large to train (at most 10).")
        need(self.weight_decay >= 0, f"weight decay cannot be negative (got {self.weight_decay}).")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1) (got {self.momentum}).")
        need(self.k >= 1, f"K (convolutions per block) must be at least 1 (got {self.k}).")
        need(self.k <= 16, f"K = {self.k} is more than this app supports (at most 16).")
        need(self.blocks >= 1, f"the network needs at least 1 block (got {self.blocks}).")
        need(self.blocks <= 30, f"{self.blocks} blocks is more than this app supports (at most 30).")
        need(self.width >= 4, f"width must be at least 4 channels (got {self.width}).")
        need(self.width <= 256, f"width {self.width} is more than this app supports (at most 256).")
        need(0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1) (got {self.label_smoothing}).")
        need(0 <= self.cutout <= 32, f"cutout must be between 0 and 32 pixels (got {self.cutout}).")
        need(self.attn_temperature > 0, f"attention temperature must be positive (got {self.attn_temperature}).")
        need(self.attn_anneal_epochs >= 0, "attention anneal epochs cannot be negative.")
        need(self.warmup_epochs >= 0, f"warm-up cannot be negative (got {self.warmup_epochs}).")
        need(self.warmup_epochs < self.epochs, f"warm-up ({self.warmup_epochs} epochs) must be shorter than the run.")
        need(self.train_subset >= 0, f"train subset cannot be negative (got {self.train_subset}).")
        need(self.val_size >= 0, f"validation size cannot be negative (got {self.val_size}).")
        need(self.val_size <= 25_000, f"validation size {self.val_size} leaves too little to train on (at most 25000).")
        need(0 <= self.threads <= 1024, f"CPU threads must be between 0 (one per core) and 1024 (got {self.threads}).")
        need(self.time_budget >= 0, f"the time budget cannot be negative (got {self.time_budget:g} s).")
        need(self.time_budget <= MAX_BUDGET_S, f"a time budget of {self.time_budget:g} s is more than this app plans "
             f"(at most {MAX_BUDGET_S // 86_400} days).")
        need(self.folds == 0 or 2 <= self.folds <= 20, f"cross-validation folds are 0 (off) or 2 to 20 (got {self.folds}).")
        need(self.folds == 0 or 0 <= self.fold < self.folds,
             f"the held-out fold is 0 to {self.folds - 1} of {self.folds} folds (got {self.fold}).")
        need(not (self.folds and self.val_size), "with cross-validation folds the held-out fold is the validation "
             f"split: set the validation split to 0 (got {self.val_size}).")
        need(LABELS_NAME.match(self.labels) is not None, f"label set {self.labels!r}: write NAME or NAME@VERSION, "
             "a name of letters, digits, '-', '_' or '.' (blank = the dataset's own labels).")
        need(self.eval_every >= 1, f"evaluate every must be at least 1 epoch (got {self.eval_every}).")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r}).")
        need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r}).")
        need(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)} (got {self.device!r}).")
        need(self.impl in IMPLS, f"implementation must be one of {', '.join(IMPLS)} (got {self.impl!r}).")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r}).")
        if not problems:
            params = summarize_shape(self.blocks, self.k, self.width).params
            need(params <= MAX_PARAMS, f"this network would have {params / 1e6:,.0f} M parameters, more than the "
                 f"{MAX_PARAMS / 1e6:.0f} M this app trains: lower the width, K or the number of blocks.")
        return problems

    def check(self) -> "TrainConfig":
        """Raise ConfigError listing every problem; return self when it can run."""
        problems = self.validate()
        if problems:
            raise ConfigError(problems)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, ignoring keys this version does not know (runs saved by other versions)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def differences(self, other: "TrainConfig") -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, as name -> (self's, other's)."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }


class ConfigError(ValueError):
    """A TrainConfig that cannot run; `problems` holds one sentence per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Invalid training configuration:\n  - " + "\n  - ".join(problems))


# Fields that describe where and how a run executes rather than what it learns: a preset leaves them alone.
RUNTIME_FIELDS = ("data_dir", "download", "device", "impl", "precision", "compile", "cuda_graphs", "threads", "records",
                  "name")

# Which labels and which images a run learns from, not how: a preset leaves them alone, and a run that differs from a
# preset only in them still matches it.
LABEL_FIELDS = ("labels", "folds", "fold")

# The same architecture, narrow, for a CPU: 77-79% test accuracy in 3 epochs, which take 3.2 minutes on a 2-core Xeon
# with AMX/bf16 and about 12 on a 2-core AMD EPYC without bf16 units (README; width 16 for 3 epochs beat width 8
# for 6 and width 12 for 4 in the same time, docs/performance.md).
_QUICK: dict[str, Any] = {
    "width": 16,
    "k": 2,
    "epochs": 3,
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 4e-3,
    "weight_decay": 5e-5,
    "schedule": "onecycle",
    "warmup_epochs": 0.5,
    "label_smoothing": 0.1,
    "decay_all": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The coursework exactly: 11 blocks, Adam 1e-3 with L2 5e-4, batch 256, 25 epochs, no schedule or augmentation;
    # the widths it left open as its public solutions chose them, 64 | 128 | 256 | 512 (README; --width 32 halves them).
    "seed": {"width": 64},
    "quick": _QUICK,
    # `quick` defined by its minutes instead of its epochs: as many steps as this machine trains in 5 minutes, the
    # one-cycle schedule fitted to them (engine/budget.py). Its accuracy is what the machine's pace buys (README).
    "5min": {**_QUICK, "time_budget": 300.0},
    # The seed's 11 blocks and widths, with the recipe that gets the most out of 25 epochs (README).
    "best": {
        "width": 64,
        "augment": True,
        "cutout": 8,
        "label_smoothing": 0.1,
        "schedule": "onecycle",
        "warmup_epochs": 5.0,
        "optimizer": "sgd",
        "lr": 0.2,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 512,
        "attn_temperature": 30.0,
        "attn_anneal_epochs": 10,
        "zero_init_bn": True,
        "decay_all": False,
        "tta_flip": True,
        "val_size": 5000,
    },
}


def preset(preset_name: str, **overrides: Any) -> TrainConfig:
    """The named preset, with `overrides` applied on top."""
    if preset_name not in PRESETS:
        raise ConfigError([f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}."])
    return TrainConfig(**{**PRESETS[preset_name], **overrides})


def matching_preset(config: TrainConfig) -> str | None:
    """The preset this config equals (runtime fields aside), or None for a custom config."""
    for name in PRESETS:
        reference = preset(name)
        if all(f in RUNTIME_FIELDS or f in LABEL_FIELDS for f in config.differences(reference)):
            return name
    return None

