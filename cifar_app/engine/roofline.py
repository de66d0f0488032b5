"""The training step against this machine's own limit: the FLOP/s a step achieves as a share of what this
machine's matrix multiply reaches in the same process, on the same threads, in the same precision.

A ratio against the coursework's way says how much faster the project trains; on a CPU both ways spend their time
in the same convolutions, so that ratio cannot say how far the step is from what the machine can do. This can:
`matmul_flops` times a large square matrix multiply (the fastest arithmetic a machine does, the practical roof),
and `OpTimer` runs one training step op by op, timing each ATen operator the step dispatches (forward, backward and
the optimizer's update) and counting its FLOPs with torch's own formulas (torch.utils.flop_counter: convolutions and
matrix multiplies, forward and backward; element-wise ops count none). Achieved = FLOPs of a step x steps/s.
`op_table` is the per-op profile that says what holds a step below the roof.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from cifar_app.config import TrainConfig
from cifar_app.data.loader import normalize
from cifar_app.device import sync
from cifar_app.model.step import TrainingStep

MATMUL_SIZES = (1024, 2048)  # large enough to reach the roof on a CPU core pair, small enough to time in a second


def matmul_flops(device: torch.device, bf16: bool, sizes: tuple[int, ...] = MATMUL_SIZES, repeats: int = 5) -> float:
    """FLOP/s of this machine's square matrix multiply in the step's precision (bf16 or fp32), on this process's
    threads: the best of `repeats` timed products at each size, after one untimed."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    best = 0.0
    gen = torch.Generator().manual_seed(0)
    for n in sizes:
        a, b = (torch.randn(n, n, generator=gen).to(device, dtype) for _ in range(2))
        torch.mm(a, b)
        sync(device)
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - started))
    return best


@dataclass
class OpRow:
    name: str
    calls: int = 0
    seconds: float = 0.0
    flops: float = 0.0


class OpTimer(TorchDispatchMode):
    """Times every ATen operator dispatched under it (synchronising the device around each) and counts its FLOPs
    where torch knows a formula. Below autograd and autocast: it sees the backward's operators and bf16 as run."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device
        self.rows: dict[str, OpRow] = defaultdict(lambda: OpRow(""))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        sync(self.device)
        started = time.perf_counter()
        out = func(*args, **kwargs)
        sync(self.device)
        seconds = time.perf_counter() - started
        packet = func._overloadpacket
        row = self.rows[str(packet)]
        row.name, row.calls, row.seconds = str(packet), row.calls + 1, row.seconds + seconds
        row.flops += op_flops(packet, args, kwargs, out)
        return out


def op_flops(packet, args: tuple, kwargs: dict, out) -> float:
    """FLOPs of one operator call by torch's formulas; for a convolution's backward, the forward's FLOPs for each
    gradient it computes (torch's formula for the weight's gradient ignores `groups`, and counts a grouped
    convolution of a batch of 128 per-sample kernels 128 times over)."""
    if packet is torch.ops.aten.convolution_backward:
        grad_out, weight, transposed, mask = args[0], args[2], args[7], args[10]
        spatial = grad_out.shape[2:] if not transposed else args[1].shape[2:]
        batch = grad_out.shape[0]
        forward = 2 * batch * weight.numel() * int(torch.tensor(spatial).prod()) if len(spatial) else 0
        return forward * (int(mask[0]) + int(mask[1]))
    if packet in flop_registry:
        return flop_registry[packet](*args, **kwargs, out_val=out)
    return 0.0


@dataclass
class StepProfile:
    """One training step, op by op, and the machine's roof it is measured against."""

    rows: list[OpRow]  # per operator, for one step, slowest first
    batch_size: int
    matmul: float  # FLOP/s of this machine's matrix multiply, same threads and precision
    precision: str
    wall_s: float  # a step's time under the profiler (its own cost included)

    @property
    def flops(self) -> float:
        return sum(r.flops for r in self.rows)

    @property
    def op_seconds(self) -> float:
        return sum(r.seconds for r in self.rows)

    def share(self, images_per_s: float) -> float:
        """The step's achieved FLOP/s at `images_per_s` (timed without the profiler) over the matmul's."""
        return self.flops / self.batch_size * images_per_s / self.matmul


def profile_step(config: TrainConfig, device: torch.device, steps: int = 5) -> StepProfile:
    """The project's training step for `config` (eager: a CUDA graph hides its operators), op by op: each
    operator's median over `steps` steps after two untimed ones (a neighbour's burst on a shared machine falls on
    one step, not on the table); with the matrix multiply's FLOP/s in the step's precision."""
    step = TrainingStep(config.replace(cuda_graphs=False, compile=False), device)
    gen = torch.Generator().manual_seed(0)
    x = normalize(torch.randint(0, 256, (config.batch_size, 3, 32, 32), dtype=torch.uint8, generator=gen)).to(device)
    x = x.contiguous(memory_format=torch.channels_last) if step.channels_last else x
    y = torch.randint(0, 10, (config.batch_size,), generator=gen).to(device)
    for _ in range(2):
        step(x, y)
    timers, walls = [], []
    for _ in range(steps):
        timers.append(OpTimer(device))
        started = time.perf_counter()
        with timers[-1]:
            step(x, y)
        walls.append(time.perf_counter() - started)
    rows = []
    for name, row in timers[0].rows.items():
        seconds = statistics.median(t.rows[name].seconds if name in t.rows else 0.0 for t in timers)
        rows.append(OpRow(name, row.calls, seconds, row.flops))
    rows.sort(key=lambda r: r.seconds, reverse=True)
    wall_s = statistics.median(walls)
    return StepProfile(rows, config.batch_size, matmul_flops(device, step.bf16), "bf16" if step.bf16 else "fp32",
                       wall_s)


def op_table(profile: StepProfile, rows: int = 15) -> list[str]:
    """The per-op profile as lines: each operator's share of the profiled step's time and the FLOP/s it reaches
    against the matrix multiply's; then what the operators with and without FLOPs take, and the rest (Python,
    autograd's bookkeeping, the profiler's own cost)."""
    step_s = profile.wall_s
    lines = [f"  {'operator':<44}{'calls':>6}{'ms':>9}{'share':>8}{'GFLOP/s':>10}{'of matmul':>11}"]
    for r in profile.rows[:rows]:
        rate = r.flops / r.seconds if r.flops and r.seconds else 0.0
        lines.append(f"  {r.name:<44}{r.calls:>6}{1e3 * r.seconds:>9.2f}{100 * r.seconds / step_s:>7.1f}%"
                     + (f"{rate / 1e9:>10.1f}{100 * rate / profile.matmul:>10.1f}%" if rate else ""))
    counted = [r for r in profile.rows if r.flops]
    arithmetic_s = sum(r.seconds for r in counted)
    rate = profile.flops / arithmetic_s if arithmetic_s else 0.0
    lines.append(f"  operators with FLOPs (convolutions, matrix multiplies): {100 * arithmetic_s / step_s:.0f}% of the "
                 f"step, at {rate / 1e9:,.1f} GFLOP/s = {100 * rate / profile.matmul:.0f}% of the matmul's")
    lines.append(f"  operators without (normalisation, element-wise, pooling, copies, the optimizer): "
                 f"{100 * (profile.op_seconds - arithmetic_s) / step_s:.0f}% of the step; outside any operator "
                 "(Python, autograd, the profiler's own cost): "
                 f"{100 * max(0.0, step_s - profile.op_seconds) / step_s:.0f}%")
    return lines
