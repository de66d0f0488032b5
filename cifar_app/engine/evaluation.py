"""The evaluation the training loop runs: logits of a split (with flip test-time augmentation where the run
asks for it), batch by batch so that Stop can interrupt it, and their accuracy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cifar_app.data.loader import normalize
from cifar_app.device import autocast


def flip_averaged(model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Flip test-time augmentation: the mean of `logits` (the model's for the normalised batch x) and the
    model's float32 logits for the mirror images of x. Evaluation and Predict both answer with it."""
    return (logits + model(x.flip(3)).float()) / 2


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 1000,
    bf16: bool = False,
    tta_flip: bool = False,
    channels_last: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """float32 logits (N, classes) on `device` for uint8 NCHW images; with `tta_flip`, the mean of the
    logits of each image and its mirror image. `on_batch(done, total)` hears after each batch (it may raise
    to abandon the pass: the training loop's Stop does)."""
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(images), batch_size):
            x = normalize(images[start : start + batch_size].to(device, non_blocking=True))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, bf16):
                logits = model(x).float()
                if tta_flip:
                    logits = flip_averaged(model, x, logits)
            chunks.append(logits)
            if on_batch is not None:
                on_batch(min(start + batch_size, len(images)), len(images))
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, 10, device=device)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of rows whose arg-max is the label."""
    if len(labels) == 0:
        return float("nan")
    return (logits.argmax(1) == labels.to(logits.device)).sum().item() * 100 / len(labels)
