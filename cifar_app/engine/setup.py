"""What a run trains on and where, before its first step: the checked config, the device, the training labels (the
dataset's own or a label set's, data/labels.py), the split (a validation split or a cross-validation fold held out,
a label set's excluded images left out) and the batches on the device; and what the run's config.json records of it.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision

from cifar_app.config import ConfigError, TrainConfig
from cifar_app.data.dataset import Cifar10, load_cifar10
from cifar_app.data.labels import EXCLUDED, LabelSetError, apply_label_set
from cifar_app.data.loader import TensorLoader, run_split
from cifar_app.device import describe_device, pick_device, prefers_channels_last
from cifar_app.events import Event, StatusEvent
from cifar_app.model.network import summarize
from cifar_app.model.step import TrainingStep, describe_impls


@dataclass
class Setup:
    """What a run trains on and where: the checked config, the device, the batches and the held-out splits."""

    config: TrainConfig
    device: torch.device
    data: Cifar10
    loader: TensorLoader
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    train_index: torch.Tensor  # each training image's index in the dataset's training split
    val_index: torch.Tensor | None = None  # each validation (held-out fold) image's index there
    labels: dict[str, Any] | None = None  # the label set trained on (name, version, fingerprint...); None: the own


def training_labels(config: TrainConfig, data: Cifar10) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """The labels a run learns: the dataset's own, or those of the label set `config.labels` (EXCLUDED for an image
    left out), with what the run records of the set. A set that does not fit this copy is a ConfigError."""
    if not config.labels:
        return data.train_labels, None
    try:
        labels, record = apply_label_set(config.labels, config.data_dir, data.train_labels.numpy())
    except LabelSetError as error:
        raise ConfigError([str(error)]) from error
    return torch.from_numpy(labels.astype(np.int64)), record


def prepare(config: TrainConfig, data: Cifar10 | None, emit: Callable[[Event], None]) -> Setup:
    """Check the config, pick the device and put the data on it, split as the config says."""
    config.check()
    device = pick_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # training shapes are fixed (drop_last): pick the fastest kernels once
    elif device.type == "cpu" and config.threads:
        torch.set_num_threads(config.threads)
    if data is None:
        emit(StatusEvent(f"Loading CIFAR-10 from {config.data_dir}"))
        data = load_cifar10(config.data_dir, download=config.download)
    labels, record = training_labels(config, data)
    if record is not None:
        emit(StatusEvent(f"Training on the label set {record['name']}@{record['version']} ({record['excluded']:,} "
                         f"images excluded, {100 * record['differs_from_own']:.1f}% of the labels differ from the "
                         "dataset's own)"))
    keep = labels != EXCLUDED if record is not None and record["excluded"] else None
    train_idx, val_idx = run_split(len(labels), config.val_size, config.seed, config.train_subset, config.folds,
                                   config.fold, keep)
    loader = TensorLoader(
        data.train_images[train_idx], labels[train_idx], config.batch_size, train=True,
        augment_crop_flip=config.augment, cutout_size=config.cutout, device=device, seed=config.seed,
        channels_last=prefers_channels_last(device),
    )
    val = (data.train_images[val_idx].to(device), labels[val_idx].to(device))
    return Setup(config, device, data, loader, val, (data.test_images.to(device), data.test_labels.to(device)),
                 train_idx, val_idx, record)


def run_record(setup: Setup, step: TrainingStep) -> dict[str, Any]:
    """What config.json keeps beside the config: how and on what the run trained."""
    summary = summarize(step.model)
    versions = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}
    return {
        "seed": setup.config.seed, "device": describe_device(setup.device), "device_type": setup.device.type,
        "versions": versions, "data_source": setup.data.source, "data_fingerprint": setup.data.fingerprint,
        "impl": describe_impls(step.model.block_impls(setup.device.type)),
        "precision": "bf16 autocast" if step.bf16 else "fp32", "channels_last": step.channels_last,
        "params": summary.params, "macs": summary.macs, "train_images": len(setup.loader.images),
        "val_images": len(setup.val[1]), "command": recorded_command(sys.argv),
        **({"labels": setup.labels} if setup.labels is not None else {}),
    }


def recorded_command(argv: list[str]) -> str:
    """The command line a run keeps, without a secret: the value of `--storage` (a database URL) is dropped, for a
    run folder is read by others and a password must never reach one."""
    if not argv or "cifar_app" not in argv[0]:
        return ""
    words = []
    for word in argv:
        if words and words[-1] == "--storage":
            word = "***"
        words.append("--storage=***" if word.startswith("--storage=") else word)
    return " ".join(words)
