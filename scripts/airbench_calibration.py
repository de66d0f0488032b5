"""A calibration no one here wrote: Keller Jordan's airbench94 (the PyPI package `airbench`, used as it is)
trained on the same copy of CIFAR-10 this project trains on. Published: 94.0% mean test accuracy on the
original data in about 3 s on an A100. What it reaches on our copy says how much of any gap is the data.

    python scripts/airbench_calibration.py --data-dir data [--runs 5]     # needs a CUDA GPU

airbench's loader reads `cifar10/train.pt` and `cifar10/test.pt` (uint8 NHWC images, labels, classes) under
the working directory; this adapter writes them from `cifar_app.data.load_cifar10`, so any format this
project reads (binary release, python batches, JPEG image folder) feeds it. `--prepare-only` writes the
files and stops (what a CPU can check).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: the project's engine

from cifar_app.data.dataset import load_cifar10
from cifar_app.data.formats import CLASSES


def write_airbench_files(data_dir: str, folder: Path) -> str:
    """airbench's two files from our data; returns the data's source line."""
    data = load_cifar10(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, images, labels in (("train", data.train_images, data.train_labels),
                                 ("test", data.test_images, data.test_labels)):
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels, "classes": list(CLASSES)},
                   folder / f"{name}.pt")
    return data.source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--runs", type=int, default=5, help="training runs after one warm-up (airbench's own protocol)")
    parser.add_argument("--workdir", default="/tmp/airbench-work", help="where airbench's cifar10/ folder goes")
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    source = write_airbench_files(args.data_dir, workdir / "cifar10")
    print(f"data: {source}; airbench files in {workdir / 'cifar10'}", flush=True)
    if args.prepare_only:
        return 0
    if not torch.cuda.is_available():
        print("airbench needs a CUDA GPU; --prepare-only checks the rest")
        return 1
    os.chdir(workdir)  # airbench opens 'cifar10/...' relative to the working directory
    import airbench
    from airbench.lib_airbench94 import hyp

    airbench.warmup94(verbose=False)
    test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    accuracies, started = [], time.perf_counter()
    for run in range(args.runs):
        model = airbench.train94(run=run, verbose=False)  # returns the trained model
        accuracies.append(100 * float(airbench.evaluate(model, test, tta_level=hyp["net"]["tta_level"])))
        print(f"airbench94 run {run + 1}: {accuracies[-1]:.2f}%", flush=True)
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    print(f"airbench94 on {source}: mean {statistics.mean(accuracies):.2f}% (sd {spread:.2f}, n={len(accuracies)}), "
          f"{(time.perf_counter() - started) / len(accuracies):.1f} s a run; published 94.0% on the original data")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
