"""`python -m cifar_app.bench`: the project's training path against the coursework's, in one process.

Four measurements on the current device, each after warm-up, each printed with a ratio to its baseline:
  1. input pipeline: the coursework's DataLoader of per-image PIL transforms vs the tensor pipeline;
  2. the dynamic convolution: forward+backward images/s of each exact implementation (and the default);
  3. a whole training step (data + forward + backward + optimizer) for presets: the coursework's way
     (DataLoader + PIL, fp32, K separate convolutions, contiguous NCHW) vs the project's default path
     (uint8 tensors on the device, batched augmentation, the default implementation, bf16 autocast and
     channels_last on CUDA). Before timing, both paths run the same weights on the same batch and must give
     the same logits within a stated tolerance, so the ratio compares like with like;
  4. the per-image record of learning dynamics (engine/recorder.py) on that same step: recording off and on,
     the record's own cost per batch, and its epoch-end cost, as a share of a training epoch.
Section 3 ends with the training-step speedup for the first preset, as `N.NNx`; section 4 with the recording
overhead, as a percentage of a training epoch. `--sections` runs some of them.

`bench_cli` prints the tables; `speed` holds the clock this shares with the app's speed probe.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cifar_app.config import TrainConfig
from cifar_app.data.dataset import Cifar10
from cifar_app.data.loader import TensorLoader, normalize, torchvision_loader
from cifar_app.device import autocast, prefers_channels_last, sync, use_bf16
from cifar_app.engine.recorder import Recorder
from cifar_app.engine.schedule import CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES
from cifar_app.engine.speed import _cycle, _time
from cifar_app.model.network import IMPLEMENTATIONS, build_model, dynamic_conv
from cifar_app.model.step import GraphedStep, TrainingStep, describe_impls, make_optimizer, set_lr, train_step
from cifar_app.shape import block_shapes


# bf16 keeps 8 bits of mantissa: through 11 blocks, logits agree with fp32 to about 1e-2 relative.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}


# bf16 updates of two runs of the same steps differ by rounding and cuDNN's choice of kernels.
GRAPH_TOLERANCE = 0.1


@dataclass
class Timing:
    name: str
    images_per_s: float
    note: str = ""


def pipeline_timings(data: Cifar10, config: TrainConfig, device: torch.device, batches: int, workers: int) -> list[Timing]:
    """Section 1: images/s delivered to the device, ready for the model."""
    augment = config.augment
    baseline = _cycle(lambda: torchvision_loader(data.train_images, data.train_labels, config.batch_size, train=True,
                                                 augment_crop_flip=augment, num_workers=workers))

    def coursework() -> int:
        x, y = baseline()
        x, y = x.to(device), y.to(device)
        return len(y)

    tensors = TensorLoader(data.train_images, data.train_labels, config.batch_size, train=True,
                           augment_crop_flip=augment, cutout_size=config.cutout, device=device,
                           channels_last=prefers_channels_last(device))
    ours = _cycle(lambda: (b[1:] for b in tensors.batches(0)))

    def project() -> int:
        x, y = ours()
        return len(y)

    what = "crop+flip" if augment else "no augmentation"
    return [
        Timing(f"DataLoader + PIL transforms ({workers} workers, {what})", _time(coursework, device, 2, batches)),
        Timing(f"uint8 tensors on {device.type}, batched ops ({what})", _time(project, device, 2, batches)),
    ]


def implementation_timings(config: TrainConfig, device: torch.device, batches: int) -> list[Timing]:
    """Section 2: forward+backward of the whole network with each implementation of the dynamic conv."""
    bf16 = use_bf16(device, config.precision)
    channels_last = device.type == "cuda"
    torch.manual_seed(0)
    x = normalize(torch.randint(0, 256, (config.batch_size, 3, 32, 32), dtype=torch.uint8), torch.float32).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (config.batch_size,), device=device)
    results = []
    for impl in (*IMPLEMENTATIONS, "auto"):
        model = build_model(config.replace(impl=impl), device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def step() -> int:
            with autocast(device, bf16):
                loss = nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            return len(y)

        note = f"default: {describe_impls(model.block_impls(device.type))}" if impl == "auto" else ""
        results.append(Timing(impl, _time(step, device, 2, batches), note))
    return results


def block_timings(config: TrainConfig, device: torch.device, batches: int) -> list[tuple[str, list[Timing]]]:
    """Section 2b: forward+backward of the dynamic convolution alone, per distinct block shape: the
    measurements behind `auto_impl`."""
    bf16 = use_bf16(device, config.precision)
    shapes = list(dict.fromkeys((c_in, c_out, side) for c_in, c_out, side, _ in block_shapes(config.blocks, config.width)))
    gen = torch.Generator().manual_seed(0)
    table = []
    for c_in, c_out, side in shapes:
        b, k = config.batch_size, config.k
        x = torch.randn(b, c_in, side, side, generator=gen).to(device).requires_grad_()
        if device.type == "cuda":
            x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        w = (torch.randn(k * c_out, c_in, 3, 3, generator=gen) * 0.1).to(device).requires_grad_()
        a = torch.softmax(torch.randn(b, k, generator=gen), 1).to(device).requires_grad_()
        rows = []
        for impl in IMPLEMENTATIONS:
            def step(impl: str = impl) -> int:
                with autocast(device, bf16):
                    out = dynamic_conv(x, w, a, impl)
                out.float().sum().backward()
                return b
            rows.append(Timing(impl, _time(step, device, 1, max(2, batches // 2), budget_s=5.0)))
        table.append((f"{c_in}->{c_out} channels at {side}x{side}", rows))
    return table


def check_same_math(config: TrainConfig, device: torch.device) -> tuple[float, float, str]:
    """Relative difference of the logits of the two paths on the same weights and batch, and the tolerance.

    Both run in training mode (BatchNorm on batch statistics), as in a training step. (In eval mode at
    initialisation the running statistics are still 0 and 1, activations grow through the residual blocks
    to logits of ~50, and bf16's relative error reaches ~0.1 for that reason alone.)"""
    torch.manual_seed(0)
    reference = build_model(config.replace(impl="loop"), "cpu").double().train()
    fast = build_model(config.replace(impl="auto"), device)
    fast.load_state_dict(reference.state_dict())
    fast.train()
    x = normalize(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)))
    bf16 = use_bf16(device, config.precision)
    with torch.no_grad():
        want = reference(x.double())
        xf = x.to(device)
        if device.type == "cuda":
            fast = fast.to(memory_format=torch.channels_last)
            xf = xf.contiguous(memory_format=torch.channels_last)
        with autocast(device, bf16):
            got = fast(xf).double().cpu()
    precision = "bf16" if bf16 else "fp32"
    return ((got - want).norm() / want.norm()).item(), TOLERANCE[precision], precision


def step_timings(
    data: Cifar10, config: TrainConfig, device: torch.device, batches: int, workers: int
) -> tuple[Timing, Timing]:
    """Section 3: whole training steps, the coursework's way and the project's default (train's own step)."""
    slow_step = TrainingStep(config, device, fast=False)
    loader = _cycle(lambda: torchvision_loader(data.train_images, data.train_labels, config.batch_size, train=True,
                                               augment_crop_flip=config.augment, num_workers=workers))

    def coursework() -> int:
        x, y = loader()
        slow_step(x.to(device), y.to(device))
        return len(y)

    fast_step = TrainingStep(config, device)
    tensors = TensorLoader(data.train_images, data.train_labels, config.batch_size, train=True,
                           augment_crop_flip=config.augment, cutout_size=config.cutout, device=device,
                           channels_last=fast_step.channels_last)
    batches_iter = _cycle(lambda: (b[1:] for b in tensors.batches(0)))

    def project() -> int:
        x, y = batches_iter()
        fast_step(x, y)
        return len(y)

    slow = _time(coursework, device, 2, batches)
    fast = _time(project, device, 5 if config.compile else 2, batches)
    return (Timing("coursework: DataLoader+PIL, fp32, loop", slow),
            Timing(f"project: tensors, {config.impl} impl, {fast_step.describe()}", fast))


@dataclass
class RecordCost:
    off: Timing  # the training step with recording off
    on: Timing  # and on
    batch_s: float  # the record's op alone, per batch
    epoch_end_s: float  # deriving a full-size epoch's arrays, one copy to the host, one file
    batch_size: int

    @property
    def epoch_s(self) -> float:
        """A full-size training epoch at the recording-off pace."""
        return CIFAR10_TRAIN_IMAGES / self.off.images_per_s

    @property
    def share(self) -> float:
        """The record's cost as a share of a training epoch (its op timed alone: steadier than on - off)."""
        return (CIFAR10_TRAIN_IMAGES // self.batch_size * self.batch_s + self.epoch_end_s) / self.epoch_s


def record_costs(data: Cifar10, config: TrainConfig, device: torch.device, batches: int, rounds: int = 3) -> RecordCost:
    """Section 4: the training step with the per-image record off and on (interleaved rounds, the best of each),
    the record's own op per batch timed alone, and the end of a full-size epoch (50,000 training and 10,000
    test images: derive the arrays on the device, one copy to the host, one atomic file)."""
    step = TrainingStep(config, device)
    loader = TensorLoader(data.train_images, data.train_labels, config.batch_size, train=True,
                          augment_crop_flip=config.augment, cutout_size=config.cutout, device=device,
                          channels_last=step.channels_last)
    with tempfile.TemporaryDirectory() as folder:
        recorder = Recorder(Path(folder), loader.order, loader.labels, config.batch_size, data.test_labels.to(device))
        recorder.begin_epoch(0, 0)
        next_batch = _cycle(lambda: loader.batches(0))

        def steps(record: bool) -> Callable[[], int]:
            def one() -> int:
                i, x, y = next_batch()
                logits, _ = step(x, y)
                if record:
                    recorder.batch(i, logits)
                return len(y)
            return one

        offs, ons = [], []
        for _ in range(rounds):  # interleaved, so a neighbour's load falls on both alike
            offs.append(_time(steps(False), device, 1, batches))
            ons.append(_time(steps(True), device, 1, batches))
        off, on = max(offs), max(ons)
        i, x, y = next_batch()
        logits, _ = step(x, y)
        repeats = 500
        sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            recorder.batch(i, logits)
        sync(device)
        batch_s = (time.perf_counter() - started) / repeats
        gen = torch.Generator(device=device).manual_seed(0)
        n, m = CIFAR10_TRAIN_IMAGES, CIFAR10_TEST_IMAGES
        full = Recorder(Path(folder), lambda epoch: torch.randperm(n, device=device, generator=gen),
                        torch.randint(0, 10, (n,), device=device, generator=gen), config.batch_size,
                        torch.randint(0, 10, (m,), device=device, generator=gen))
        full.begin_epoch(0, 0)
        full.buffer.copy_(torch.randn(n, 10, device=device, generator=gen))
        full.test(torch.randn(m, 10, device=device, generator=gen))
        sync(device)
        started = time.perf_counter()
        full.end_epoch(1)
        epoch_end_s = time.perf_counter() - started
    return RecordCost(Timing("recording off", off), Timing("recording on (the loop's own logits, gathered)", on),
                      batch_s, epoch_end_s, config.batch_size)


def check_graph_updates(config: TrainConfig, device: torch.device, steps: int = 4) -> float:
    """Relative difference between the weight updates of `steps` eager steps and `steps` replays of the
    captured CUDA graph, from the same weights on the same batches, with the learning rate changing at
    every step (a graph that froze the rate at capture would miss by tens of percent)."""
    torch.manual_seed(0)
    eager = build_model(config, device).to(memory_format=torch.channels_last)
    graph_model = copy.deepcopy(eager)
    before = torch.cat([p.detach().float().flatten() for p in eager.parameters()])
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    bf16 = use_bf16(device, config.precision)
    gen = torch.Generator().manual_seed(2)
    batches = [(normalize(torch.randint(0, 256, (config.batch_size, 3, 32, 32), dtype=torch.uint8, generator=gen))
                .to(device).contiguous(memory_format=torch.channels_last),
                torch.randint(0, 10, (config.batch_size,), generator=gen).to(device)) for _ in range(steps)]
    rates = [config.lr * f for f in (1.0, 0.3, 2.0, 0.7, 1.5, 0.1)][:steps]
    opt = make_optimizer(config, eager)
    for (x, y), lr in zip(batches, rates):
        set_lr(opt, lr)
        train_step(eager, opt, criterion, x, y, device, bf16)
    gopt = make_optimizer(config, graph_model, tensor_lr=True)
    step = GraphedStep(graph_model, gopt, criterion, *batches[0], device, bf16)
    for (x, y), lr in zip(batches, rates):
        set_lr(gopt, lr)
        step(x, y)
    sync(device)
    moved_eager = torch.cat([p.detach().float().flatten() for p in eager.parameters()]) - before
    moved_graph = torch.cat([p.detach().float().flatten() for p in graph_model.parameters()]) - before
    return ((moved_graph - moved_eager).norm() / moved_eager.norm()).item()


def profile_table(config: TrainConfig, device: torch.device, steps: int = 5, rows: int = 25) -> str:
    """A torch.profiler table of `steps` eager training steps (no CUDA graph: the graph hides the kernels it
    replays), the operators that take the most device time first: where a step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    step = TrainingStep(config.replace(cuda_graphs=False, compile=False), device)
    x = normalize(torch.randint(0, 256, (config.batch_size, 3, 32, 32), dtype=torch.uint8)).to(device)
    x = x.contiguous(memory_format=torch.channels_last) if step.channels_last else x
    y = torch.randint(0, 10, (config.batch_size,), device=device)
    for _ in range(3):
        step(x, y)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(x, y)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)
