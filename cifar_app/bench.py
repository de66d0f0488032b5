"""`python -m cifar_app.bench`: the project's training path against the coursework's, in one process.

Four measurements on the current device, each after warm-up, each printed with a ratio to its baseline:
  1. input pipeline: the coursework's DataLoader of per-image PIL transforms vs the tensor pipeline;
  2. the dynamic convolution: forward+backward images/s of each exact implementation (and the default);
  3. a whole training step (data + forward + backward + optimizer) for presets: the coursework's way
     (DataLoader + PIL, fp32, K separate convolutions, contiguous NCHW) vs the project's default path
     (uint8 tensors on the device, batched augmentation, the default implementation, bf16 autocast and
     channels_last on CUDA). Before timing, both paths run the same weights on the same batch and must give
     the same logits within a stated tolerance, so the ratio compares like with like;
  4. the per-image record of learning dynamics (dynamics.Recorder) on that same step: recording off and on,
     the record's own cost per batch, and its epoch-end cost, as a share of a training epoch.
Section 3 ends with the training-step speedup for the first preset, as `N.NNx`; section 4 with the recording
overhead, as a percentage of a training epoch. `--sections` runs some of them.

The dashboard's time-per-epoch estimate comes from here too: `measure_images_per_s` times the same
`TrainingStep` a run trains with on a few synthetic batches (refusing, before allocating, a model whose step
would not fit in the memory a probe may take), `SpeedCache` keeps the measurements, and `estimate_seconds`
turns one into the time of an epoch and of a run.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cifar_app.config import TrainConfig, preset
from cifar_app.data import (
    Cifar10, DataFormatError, DataNotFound, TensorLoader, load_cifar10, normalize, torchvision_loader,
)
from cifar_app.device import autocast, describe_device, pick_device, prefers_channels_last, sync, use_bf16
from cifar_app.dynamics import Recorder
from cifar_app.model import IMPLEMENTATIONS, build_model, dynamic_conv
from cifar_app.schedule import CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES, EVAL_COST, eval_images, train_images
from cifar_app.shape import block_shapes, training_bytes
from cifar_app.step import GraphedStep, TrainingStep, describe_impls, make_optimizer, set_lr, train_step

# bf16 keeps 8 bits of mantissa: through 11 blocks, logits agree with fp32 to about 1e-2 relative.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}
# bf16 updates of two runs of the same steps differ by rounding and cuDNN's choice of kernels.
GRAPH_TOLERANCE = 0.1


@dataclass
class Timing:
    name: str
    images_per_s: float
    note: str = ""


def _time(step: Callable[[], int], device: torch.device, warmup: int, repeats: int, budget_s: float = 15.0) -> float:
    """Images/s of `step` (which returns the images it handled) over `repeats` calls after `warmup` untimed
    ones; a very slow path stops early after `budget_s` seconds (at least one timed call)."""
    for _ in range(warmup):
        step()
    sync(device)
    started = time.perf_counter()
    images = 0
    for _ in range(repeats):
        images += step()
        if time.perf_counter() - started > budget_s:
            break
    sync(device)
    return images / (time.perf_counter() - started)


def _cycle(make: Callable[[], Iterator]) -> Callable[[], tuple]:
    """next() over an iterable that restarts when exhausted."""
    state = {"it": iter(make())}

    def next_batch() -> tuple:
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(make())
            return next(state["it"])

    return next_batch


def synthetic_cifar(n_train: int = 5000, n_test: int = 1000, seed: int = 0) -> Cifar10:
    """Random uint8 images, for timing where the real data is absent (speed does not depend on pixels)."""
    gen = torch.Generator().manual_seed(seed)
    images = lambda n: torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)  # noqa: E731
    labels = lambda n: torch.randint(0, 10, (n,), generator=gen)  # noqa: E731
    return Cifar10(images(n_train), labels(n_train), images(n_test), labels(n_test), source="synthetic images")


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


CPU_PROBE_BATCH = 128  # a speed probe's largest batch on a CPU: smaller ones run slower per image, larger take long
PROBE_MAX_BYTES = 2 * 2**30  # a speed probe never takes more than this, nor a quarter of what is free


def available_bytes(device: torch.device) -> int:
    """Memory free for a new allocation on `device` (Linux's MemAvailable on the CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def probe_problem(config: TrainConfig, device: torch.device) -> str | None:
    """Why the speed of `config` may not be measured here (a config validation refuses, or a step that would
    need more memory than a probe may take), as a sentence; None when it may. Nothing is allocated."""
    problems = config.validate()
    if problems:
        return "the configuration cannot run: " + " ".join(problems)
    need = training_bytes(config.blocks, config.k, config.width, config.batch_size)
    limit = min(PROBE_MAX_BYTES, available_bytes(device) // 4)
    if need > limit:
        return (f"one training step of this model would need about {need / 2**30:.1f} GiB; a speed probe takes at "
                f"most {limit / 2**30:.1f} GiB here")
    return None


def measure_images_per_s(config: TrainConfig, device: torch.device | str = "cpu", batches: int = 3) -> float:
    """Training images/s of a run's own step for `config` on `device`, on synthetic batches. Raises
    ValueError (with `probe_problem`'s sentence) rather than build what cannot fit."""
    device = torch.device(device)
    problem = probe_problem(config, device)
    if problem:
        raise ValueError(problem)
    data = synthetic_cifar(n_train=max(config.batch_size * (batches + 2), 256), n_test=10)
    step = TrainingStep(config.replace(compile=False), device)
    loader = TensorLoader(data.train_images, data.train_labels, config.batch_size, train=True,
                          augment_crop_flip=config.augment, device=device, channels_last=step.channels_last)
    next_batch = _cycle(lambda: (b[1:] for b in loader.batches(0)))

    def one() -> int:
        x, y = next_batch()
        step(x, y)
        return len(y)

    return _time(one, device, 1, batches)


def estimate_seconds(config: TrainConfig, images_per_s: float) -> tuple[float, float]:
    """Rough (seconds per epoch, seconds for the run) on full CIFAR-10 at a measured training speed."""
    work = train_images(config) + eval_images(config) * EVAL_COST
    epoch = work / max(images_per_s, 1e-9)
    return epoch, epoch * config.epochs


class SpeedCache:
    """Measured training speeds, keyed by what sets the speed; safe to share between threads (the dashboard
    keeps one per process, so every tab reuses a measurement)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._speeds: dict[tuple, float] = {}

    @staticmethod
    def key(config: TrainConfig, device: torch.device) -> tuple:
        return (device.type, config.blocks, config.k, config.width, config.batch_size, config.impl, config.precision)

    def get(self, config: TrainConfig, device: torch.device) -> float | None:
        with self._lock:
            return self._speeds.get(self.key(config, device))

    def speed(self, config: TrainConfig, device: torch.device, may_measure: bool) -> float | str | None:
        """Training images/s of `config`'s model on `device`, measured once per shape (batches of at most
        CPU_PROBE_BATCH on a CPU); a sentence when it may not be measured (a config that cannot run, a model
        too large to probe); None when it is not known and `may_measure` is False (a run is training)."""
        batch = config.batch_size if device.type != "cpu" else min(config.batch_size, CPU_PROBE_BATCH)
        probe = TrainConfig(blocks=config.blocks, k=config.k, width=config.width, batch_size=batch, impl=config.impl,
                            precision=config.precision, data_dir="")
        known = self.get(probe, device)
        if known is not None:
            return known
        problem = probe_problem(probe, device)
        if problem or not may_measure:
            return problem
        return self.measure(probe, device, batches=2 if device.type != "cpu" else 1)

    def measure(self, config: TrainConfig, device: torch.device, batches: int = 2) -> float:
        """Measure (or reuse) the speed; ValueError when it may not be measured (see `probe_problem`)."""
        known = self.get(config, device)
        if known is not None:
            return known
        speed = measure_images_per_s(config, device, batches)
        with self._lock:
            self._speeds[self.key(config, device)] = speed
        return speed


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


def _table(title: str, rows: list[Timing], baseline: float) -> str:
    width = max(len(r.name) for r in rows) + 2
    lines = [title, f"  {'':{width}}{'images/s':>12}{'ratio':>9}"]
    for r in rows:
        lines.append(f"  {r.name:{width}}{r.images_per_s:>12,.0f}{r.images_per_s / baseline:>8.2f}x  {r.note}".rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_app.bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", nargs="+", default=["quick", "seed"], help="presets for the training-step table")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--batch-size", type=int, default=None, help="override the presets' batch size")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per measurement")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="DataLoader workers of the coursework's pipeline")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 root; synthetic images when absent")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the project's model")
    parser.add_argument("--width", type=int, default=None, help="override the presets' width (for quick tests)")
    parser.add_argument("--blocks", type=int, default=None, help="override the presets' depth (for quick tests)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a torch.profiler table of the first preset's eager training step")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="which measurements to run (1 pipeline, 2 implementations, 3 training step, 4 records)")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    torch.backends.cudnn.benchmark = True  # as train() does
    try:
        data = load_cifar10(args.data_dir)
    except (DataNotFound, DataFormatError):
        data = synthetic_cifar()
    overrides = {k: v for k, v in {"batch_size": args.batch_size, "width": args.width, "blocks": args.blocks,
                                   "device": args.device, "compile": args.compile}.items() if v is not None}
    configs = {name: preset(name, **overrides) for name in args.preset}
    first = configs[args.preset[0]]
    print(f"device: {describe_device(device)}; torch {torch.__version__}; python {platform.python_version()}; "
          f"{time.strftime('%Y-%m-%d')}; data: {data.source}; {args.batches} timed batches after warm-up", flush=True)

    if "1" in args.sections:
        pipe = pipeline_timings(data, first, device, args.batches, args.workers)
        print(_table(f"\n1. input pipeline (preset {args.preset[0]}, batch {first.batch_size})", pipe,
                     pipe[0].images_per_s), flush=True)
    if "2" in args.sections:
        print_implementations(first, args.preset[0], device, args.batches)
    mismatch = "3" in args.sections and print_training_steps(data, configs, device, args.batches, args.workers,
                                                             args.profile)
    if "4" in args.sections:
        cost = record_costs(data, first, device, args.batches)
        print(_table(f"\n4. per-image records of learning dynamics (preset {args.preset[0]}, batch {first.batch_size})",
                     [cost.off, cost.on], cost.off.images_per_s), flush=True)
        print(f"  the record's op alone: {cost.batch_s * 1e6:,.0f} us a batch; the end of a 50,000-image epoch "
              f"(derive, one copy to the host, one file): {cost.epoch_end_s * 1e3:,.0f} ms; a training epoch at the "
              f"recording-off pace: {cost.epoch_s:,.0f} s. The share below adds those two up (on minus off above is "
              "the same cost seen through the noise of whole steps)", flush=True)
        print(f"\nrecording overhead, preset {args.preset[0]} on {device.type}: {100 * cost.share:.2f}% of a training "
              "epoch", flush=True)
    return 1 if mismatch else 0


SECTIONS = ("1", "2", "3", "4")


def print_implementations(config: TrainConfig, name: str, device: torch.device, batches: int) -> None:
    impls = implementation_timings(config, device, batches)
    print(_table(f"\n2. dynamic convolution, forward+backward of the network (preset {name}, batch "
                 f"{config.batch_size})", impls, impls[0].images_per_s), flush=True)
    print(f"\n2b. the dynamic convolution alone, forward+backward, per block shape (K={config.k})", flush=True)
    for shape, rows in block_timings(config, device, batches):
        fastest = max(rows, key=lambda r: r.images_per_s)
        fastest.note = "fastest"
        print(_table(f"  {shape}", rows, rows[0].images_per_s), flush=True)


def print_training_steps(data: Cifar10, configs: dict[str, TrainConfig], device: torch.device, batches: int,
                         workers: int, profile: bool = False) -> bool:
    """Section 3, printed (with `profile`, the first preset's profiler table); True when a path does not compute
    what the coursework's does."""
    print("\n3. training step: data + forward + backward + optimizer", flush=True)
    speedup = {}
    mismatch = False
    for name, config in configs.items():
        error, tolerance, precision = check_same_math(config, device)
        verdict = "same math" if error <= tolerance else "MISMATCH"
        slow, fast = step_timings(data, config, device, batches, workers)
        speedup[name] = fast.images_per_s / slow.images_per_s
        print(_table(f"  preset {name} (batch {config.batch_size}); logits vs fp64 reference: relative error "
                     f"{error:.1e} ({precision}, tolerance {tolerance:.0e}: {verdict})",
                     [slow, fast], slow.images_per_s), flush=True)
        if config.cuda_graphs and device.type == "cuda" and not config.compile:
            drift = check_graph_updates(config, device)
            ok = drift <= GRAPH_TOLERANCE
            print(f"  CUDA graph vs eager: weight updates over 4 steps with a changing learning rate differ by "
                  f"{drift:.1e} (tolerance {GRAPH_TOLERANCE:.0e}: {'same updates' if ok else 'MISMATCH'})", flush=True)
            if not ok:
                mismatch = True
        if error > tolerance:
            print(f"error: the project's path does not compute the coursework's function for preset {name}")
            mismatch = True
    name, first = next(iter(configs.items()))
    if profile:
        print(f"\n3b. where the time of an eager training step goes (preset {name}, batch {first.batch_size})",
              flush=True)
        print(profile_table(first, device), flush=True)
    print(f"\ntraining-step speedup, preset {name} on {device.type}: {speedup[name]:.2f}x", flush=True)
    return mismatch


if __name__ == "__main__":
    raise SystemExit(main())
