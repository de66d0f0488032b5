"""`python -m cifar_app.bench`: the benchmark's measurements (engine/bench.py) printed as tables, each with a
ratio to its baseline measured in the same process.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from cifar_app.config import PRECISIONS, TrainConfig, preset
from cifar_app.data.dataset import Cifar10, load_cifar10
from cifar_app.data.formats import DataFormatError, DataNotFound
from cifar_app.device import describe_device, pick_device
from cifar_app.engine.bench import (
    GRAPH_TOLERANCE, Timing, block_timings, check_graph_updates, check_same_math, implementation_timings,
    pipeline_timings, profile_table, record_costs, step_timings,
)
from cifar_app.engine.roofline import StepProfile, op_table, profile_step
from cifar_app.engine.speed import synthetic_cifar


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
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="the project's precision (default: the presets' auto; fp32 shows a CPU without bf16 "
                             "units)")
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
                                   "device": args.device, "compile": args.compile,
                                   "precision": args.precision}.items() if v is not None}
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
    speedup, roof, fast_pace = {}, {}, {}
    mismatch = False
    for name, config in configs.items():
        error, tolerance, precision = check_same_math(config, device)
        verdict = "same math" if error <= tolerance else "MISMATCH"
        slow, fast = step_timings(data, config, device, batches, workers)
        speedup[name], fast_pace[name] = fast.images_per_s / slow.images_per_s, fast.images_per_s
        print(_table(f"  preset {name} (batch {config.batch_size}); logits vs fp64 reference: relative error "
                     f"{error:.1e} ({precision}, tolerance {tolerance:.0e}: {verdict})",
                     [slow, fast], slow.images_per_s), flush=True)
        roof[name] = profile_step(config, device)
        print(roofline_line(roof[name], fast.images_per_s), flush=True)
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
    share = roof[name].share(fast_pace[name])
    if share < ROOF_TARGET:
        print(f"\n3c. what holds the step below {100 * ROOF_TARGET:.0f}% of the roof (preset {name}, batch "
              f"{first.batch_size}; one eager step op by op, each operator timed alone)", flush=True)
        print("\n".join(op_table(roof[name])), flush=True)
    print(f"\ntraining-step speedup, preset {name} on {device.type}: {speedup[name]:.2f}x", flush=True)
    print(f"roofline share, preset {name} on {device.type}: {100 * share:.1f}% of this machine's "
          f"{roof[name].precision} "
          f"matrix multiply ({torch.get_num_threads()} threads; target {100 * ROOF_TARGET:.0f}%)", flush=True)
    return mismatch


ROOF_TARGET = 0.5  # the share of the matrix multiply's FLOP/s a training step should reach (issue 23)


def roofline_line(profile: StepProfile, images_per_s: float) -> str:
    per_image = profile.flops / profile.batch_size
    return (f"  roofline: {per_image / 1e9:.3f} GFLOP an image (convolutions and matrix multiplies, forward and "
            f"backward, as run); at {images_per_s:,.0f} images/s {per_image * images_per_s / 1e9:,.1f} GFLOP/s, "
            f"{100 * profile.share(images_per_s):.1f}% of this machine's {profile.precision} matrix multiply "
            f"({profile.matmul / 1e9:,.0f} GFLOP/s, {torch.get_num_threads()} threads, this process)")
