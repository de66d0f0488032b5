"""Predictions of a trained model over a split, and the metrics computed from them."""

from __future__ import annotations

import torch
from torch import nn

from cifar_app.data import normalize
from cifar_app.device import autocast


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 1000,
    bf16: bool = False,
    tta_flip: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """float32 logits (N, classes) on `device` for uint8 NCHW images; with `tta_flip`, the mean of the
    logits of each image and its mirror image."""
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
                    logits = (logits + model(x.flip(3)).float()) / 2
            chunks.append(logits)
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, 10, device=device)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of rows whose arg-max is the label."""
    if len(labels) == 0:
        return float("nan")
    return (logits.argmax(1) == labels.to(logits.device)).sum().item() * 100 / len(labels)
