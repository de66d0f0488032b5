"""What the experiment scripts share: one thread (or a GPU), one training run through the engine's own loop, and
Markdown tables. Imported by scripts/jpeg_vs_lossless.py and scripts/width_study.py (which run from the repository
root as `python scripts/NAME.py`; Python puts scripts/ on the path, this module adds the root).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from cifar_app.config import TrainConfig  # noqa: E402
from cifar_app.data.dataset import Cifar10
from cifar_app.shape import summarize_shape
from cifar_app.engine.loop import train
from cifar_app.events import EpochEvent


def common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1: a shared machine)")
    parser.add_argument("--dry", action="store_true", help="a tiny version of the whole experiment, to check the script")


def setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)


@dataclass
class Outcome:
    """One finished run, reduced to the figures the tables show."""

    label: str
    params: int
    epochs: int
    train_acc: float  # the running accuracy of the last epoch, as the coursework printed it
    final_test: float
    best_test: float
    best_epoch: int
    seconds: float

    @property
    def gap(self) -> float:
        return self.train_acc - self.final_test


def run(label: str, config: TrainConfig, data: Cifar10, stop_at_train: float | None = None) -> Outcome:
    """Train `config` on `data` with the engine's loop (nothing saved), printing a line per epoch; with
    `stop_at_train`, stop after the first epoch whose training accuracy reaches it."""
    stop = threading.Event()
    started = time.perf_counter()

    def on_event(event: object) -> None:
        if isinstance(event, EpochEvent):
            test = f"{event.test_acc:.2f}%" if event.test_acc is not None else "-"
            print(f"  [{label}] epoch {event.epoch}/{event.epochs}: train {event.train_acc:.2f}%, test {test}, "
                  f"{event.images_per_s:,.0f} images/s, {time.perf_counter() - started:,.0f} s", flush=True)
            if stop_at_train is not None and event.train_acc >= stop_at_train:
                stop.set()

    result = train(config, data=data, on_event=on_event, stop=stop)
    if result.status == "failed" or not result.history:
        raise SystemExit(f"{label}: the run failed: {result.reason}")
    best, final, last = result.best, result.final, result.history[-1]
    return Outcome(label, summarize_shape(config.blocks, config.k, config.width).params, last.epoch, last.train_acc,
                   final.test_acc, best.test_acc, best.epoch, result.seconds)


def test_sample(data: Cifar10, size: int, seed: int = 0) -> Cifar10:
    """`data` with a fixed random `size` of its test images (all of them when size is 0 or too large)."""
    if not size or size >= len(data.test_labels):
        return data
    pick = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(seed))[:size]
    return Cifar10(data.train_images, data.train_labels, data.test_images[pick], data.test_labels[pick], data.source)


def mean_spread(values: list[float], signed: bool = False) -> str:
    """'mean ± sample standard deviation (min to max)', or the one value; `signed` for differences."""
    f = "+.2f" if signed else ".2f"
    if len(values) == 1:
        return format(values[0], f)
    return (f"{statistics.mean(values):{f}} ± {statistics.stdev(values):.2f} "
            f"({min(values):{f}} to {max(values):{f}})")


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
