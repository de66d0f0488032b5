"""How a run moves through its epochs: the learning rate at each step, the attention temperature at each
epoch, and how much work an epoch is. Plain arithmetic, no torch.

A fork's learning-rate schedule starts afresh at its branch point (step 0 of its own epochs), as the
dashboard tells its user; the attention temperature follows the absolute epoch, because it belongs to the
model: a fork of a model trained past its anneal keeps the temperature it was trained at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cifar_app.config import TrainConfig

CIFAR10_TRAIN_IMAGES, CIFAR10_TEST_IMAGES = 50_000, 10_000
# An image's forward pass costs about a third of its training step (forward + backward): evaluating an image
# counts as a third of training one in the ETAs and the time estimates.
EVAL_COST = 1 / 3


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate at optimiser step `step` of `total`.

    cosine: linear warm-up over `warmup` steps, then half a cosine to zero.
    onecycle: a triangle, rising linearly from 1/25 over `warmup` steps, then falling linearly to zero.
    """
    if schedule == "none":
        return 1.0
    if schedule == "onecycle":
        if step < warmup:
            return 0.04 + 0.96 * step / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def attention_temperature(config: TrainConfig, epoch: int) -> float:
    """Softmax temperature of the block attention in (0-based) `epoch`: from attn_temperature down to 1."""
    if config.attn_anneal_epochs <= 0:
        return config.attn_temperature
    progress = min(1.0, epoch / config.attn_anneal_epochs)
    return config.attn_temperature + (1.0 - config.attn_temperature) * progress


@dataclass(frozen=True)
class Schedule:
    """The learning rate of every step of a run whose own epochs start at `start_epoch` (a fork's branch)."""

    config: TrainConfig
    steps_per_epoch: int
    start_epoch: int = 0

    @property
    def total_steps(self) -> int:
        return (self.config.epochs - self.start_epoch) * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return round(self.config.warmup_epochs * self.steps_per_epoch)

    def batches(self, epoch: int) -> int:
        """Batches epoch `epoch` trains: all of them (a time budget's schedule may end its last one early)."""
        return self.steps_per_epoch

    def lr(self, epoch: int, batch: int) -> float:
        """The learning rate of batch `batch` (0-based) of epoch `epoch` (0-based, absolute)."""
        step = (epoch - self.start_epoch) * self.steps_per_epoch + batch
        return self.config.lr * lr_factor(self.config.schedule, step, self.total_steps, self.warmup_steps)


def eval_images(config: TrainConfig, test_images: int = CIFAR10_TEST_IMAGES, epochs: float = 1.0) -> float:
    """Images evaluated over `epochs` epochs: the validation split every epoch, the test set every
    eval_every epochs, twice each with the flip test-time augmentation."""
    per_epoch = config.val_size + test_images / config.eval_every
    return per_epoch * epochs * (2 if config.tta_flip else 1)


def train_images(config: TrainConfig, available: int = CIFAR10_TRAIN_IMAGES) -> int:
    """Training images per epoch: what the validation split leaves, capped by the subset."""
    images = available - config.val_size
    return min(images, config.train_subset) if config.train_subset else images
