"""The one place that picks the compute device and the numeric precision, and describes them."""

from __future__ import annotations

import contextlib
import os

import torch


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def pick_device(name: str = "auto") -> torch.device:
    """'auto' takes CUDA, then Apple's MPS, then the CPU; naming an absent device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for, but this machine has no usable CUDA GPU; use auto or cpu.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' was asked for, but Apple's MPS is not available here; use auto or cpu.")
    if name not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or mps.")
    return torch.device(name)


def available_devices() -> list[str]:
    """The device names this machine can train on: auto, cpu, and cuda or mps where present."""
    present = [name for name, ok in (("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available()))
               if ok]
    return ["auto", "cpu", *present]


def gpu_count() -> int:
    """CUDA GPUs this process may use (those CUDA_VISIBLE_DEVICES leaves it): one sweep worker each."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (Intel AMX or AVX512-BF16), rather than emulating it."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without the probes: assume not
        return False


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """bf16 autocast: on CUDA by default (as fast as fp16, no loss scaler), and on CPUs with native bf16 units,
    where a training step of the `quick` preset ran 1.05-1.4x faster than in fp32 (a Xeon with AMX, one thread,
    docs/performance.md). On CPUs without them it is slower than fp32 (measured on an AVX2 machine), so
    'auto' keeps fp32 there."""
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def prefers_channels_last(device: torch.device) -> bool:
    """Whether convolutions run in channels_last memory: faster with cuDNN's tensor-core kernels, measured
    slower on the CPU."""
    return device.type == "cuda"


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    # no weight-cast cache: each weight is used once per forward, and a cache breaks CUDA-graph capture
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)


def describe_device(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3 (79.1 GiB)' or 'CPU, 2 threads'."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.1f} GiB)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    threads = torch.get_num_threads()
    return f"CPU, {threads} thread{'s' if threads != 1 else ''} ({os.cpu_count()} cores)"


def sync(device: torch.device) -> None:
    """Wait for queued device work, so host clocks measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()
