"""Will a run fit in this machine's memory? Its peak estimated from the architecture and the batch before anything
is allocated, against what is free now: the Train page, the app's Start and the CLI refuse a run that cannot
fit (a batch of 8192 on the quick model took a server from 1.2 to 12.4 GB) and warn past half of what is free.

The estimate is the training process's peak resident memory on the CPU (on a GPU, the GPU's memory): Python,
torch and the app's modules, the decoded data and the training split's copy; the weights, gradients and Adam's
moments; and a share of the activations `shape.training_bytes` bounds. The constants are fitted to the peak RSS of a few runs measured on this project's
2-core Xeon (README, "Memory"); they err on the generous side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from cifar_app.config import TrainConfig
from cifar_app.engine.speed import available_bytes
from cifar_app.shape import BYTES_PER_FLOAT, FLOATS_PER_PARAM, summarize_shape, training_bytes

MB = 2**20
BASE_BYTES = 1500 * MB  # Python, torch, the modules, the 60,000 decoded images and the training split's copy (CPU)
CUDA_BASE_BYTES = 800 * MB  # the CUDA context and the data on the GPU
STEP_SHARE = 0.25  # of the activations in shape.training_bytes (an upper bound): fitted above every measured peak
PARAM_SHARE = 1.5  # of the weights, gradients and Adam's moments: all real, and a checkpoint's copy as it is saved
WARN_SHARE = 0.5  # past half of what is free, say so


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def estimate_bytes(config: TrainConfig, device_type: str = "cpu") -> int:
    """The peak memory a training run of `config` needs on a device of this type (its process, on the CPU)."""
    base = CUDA_BASE_BYTES if device_type == "cuda" else BASE_BYTES
    weights = FLOATS_PER_PARAM * BYTES_PER_FLOAT * summarize_shape(config.blocks, config.k, config.width).params
    activations = training_bytes(config.blocks, config.k, config.width, config.batch_size) - weights
    return int(base + PARAM_SHARE * weights + STEP_SHARE * activations)


@dataclass(frozen=True)
class MemoryCheck:
    """A run's estimated peak against the memory free where it will train."""

    needed: int
    free: int
    where: str  # "this machine's memory" or the GPU's name
    fitting_batch: int  # the largest power-of-two batch that fits (0: none)

    def problem(self) -> str | None:
        """Why the run cannot start here, as a sentence; None when it fits."""
        if self.needed <= self.free:
            return None
        lower = (f"a batch of {self.fitting_batch} fits" if self.fitting_batch else
                 "not even a batch of 1 fits: lower the width, K or the number of blocks")
        return (f"this run would need about {_gb(self.needed)} at its peak, but only {_gb(self.free)} of "
                f"{self.where} is free: lower the batch size ({lower}).")

    def warning(self) -> str | None:
        """Whether the run takes more than half of what is free (it fits, but squeezes everything else)."""
        if self.problem() or self.needed <= WARN_SHARE * self.free:
            return None
        return (f"this run would take about {_gb(self.needed)} of the {_gb(self.free)} free in {self.where}: more "
                "than half; the app and other programs may slow down or run out. A smaller batch takes less.")

    def describe(self) -> str:
        return f"about {_gb(self.needed)} of {_gb(self.free)} free"


def check_memory(config: TrainConfig, device: torch.device, in_use: int = 0) -> MemoryCheck:
    """`config`'s estimated peak against the memory free on `device` now; `in_use` is what the process that
    checks already holds and the run will reuse (the CLI's own Python and torch)."""
    free = available_bytes(device) + in_use
    where = "this machine's memory" if device.type != "cuda" else f"the GPU's memory ({torch.cuda.get_device_name(device)})"
    batch = 1
    while batch <= 2**16 and estimate_bytes(config.replace(batch_size=batch), device.type) <= free:
        batch *= 2
    return MemoryCheck(estimate_bytes(config, device.type), free, where, batch // 2)


def own_rss() -> int:
    """This process's resident memory now (Linux), 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
