"""The app's speed probe: how fast this machine trains a model of a given shape, measured on a few synthetic
batches with the very `TrainingStep` a run trains with (refusing, before allocating, a model whose step would
not fit in the memory a probe may take); `SpeedCache` keeps the measurements for every tab, and
`estimate_seconds` turns one into the time of an epoch and of a run. The benchmark times with the same clock.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from cifar_app.config import TrainConfig
from cifar_app.data.dataset import Cifar10
from cifar_app.data.loader import TensorLoader
from cifar_app.device import sync
from cifar_app.engine.schedule import CIFAR10_TEST_IMAGES, EVAL_COST, eval_images, train_images
from cifar_app.model.step import TrainingStep
from cifar_app.shape import training_bytes
from cifar_app.store.runs import Run, RunStore


PROBE_MIN_S = 1.5  # the Train page's CPU probe times at least this long: one batch of a small model is a fifth of
# a second, which the page being drawn beside it can slow (docs/performance.md)


def _time(step: Callable[[], int], device: torch.device, warmup: int, repeats: int, budget_s: float = 15.0,
          min_s: float = 0.0) -> float:
    """Images/s of `step` (which returns the images it handled) over `repeats` calls after `warmup` untimed
    ones, and on a CPU over at least `min_s` seconds; a very slow path stops early after `budget_s` seconds (at
    least one timed call). A GPU's calls queue, so there only `repeats` counts."""
    min_s = min_s if device.type == "cpu" else 0.0
    for _ in range(warmup):
        step()
    sync(device)
    started = time.perf_counter()
    images = calls = 0
    while calls < repeats or time.perf_counter() - started < min_s:
        images += step()
        calls += 1
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


def measure_images_per_s(config: TrainConfig, device: torch.device | str = "cpu", batches: int = 3,
                         min_seconds: float = 0.0) -> float:
    """Training images/s of a run's own step for `config` on `device`, on synthetic batches (on a CPU for at
    least `min_seconds`). Raises ValueError (with `probe_problem`'s sentence) rather than build what cannot fit."""
    device = torch.device(device)
    problem = probe_problem(config, device)
    if problem:
        raise ValueError(problem)
    with cpu_threads(config, device):
        return _measure(config, device, batches, min_seconds)


@contextlib.contextmanager
def cpu_threads(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Measure with the CPU threads the run's own process will use (`config.threads`, 0: torch's default)."""
    if device.type != "cpu" or not config.threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _measure(config: TrainConfig, device: torch.device, batches: int, min_seconds: float = 0.0) -> float:
    data = synthetic_cifar(n_train=max(config.batch_size * (batches + 2), 256), n_test=10)
    step = TrainingStep(config.replace(compile=False), device)
    loader = TensorLoader(data.train_images, data.train_labels, config.batch_size, train=True,
                          augment_crop_flip=config.augment, device=device, channels_last=step.channels_last)
    next_batch = _cycle(lambda: (b[1:] for b in loader.batches(0)))

    def one() -> int:
        x, y = next_batch()
        step(x, y)
        return len(y)

    return _time(one, device, 1, batches, min_s=min_seconds)


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
        return (device.type, config.blocks, config.k, config.width, config.batch_size, config.impl, config.precision,
                config.threads)

    def get(self, config: TrainConfig, device: torch.device) -> float | None:
        with self._lock:
            return self._speeds.get(self.key(config, device))

    def speed(self, config: TrainConfig, device: torch.device, may_measure: bool) -> float | str | None:
        """Training images/s of `config`'s model on `device`, measured once per shape (batches of at most
        CPU_PROBE_BATCH on a CPU); a sentence when it may not be measured (a config that cannot run, a model
        too large to probe); None when it is not known and `may_measure` is False (a run is training)."""
        batch = config.batch_size if device.type != "cpu" else min(config.batch_size, CPU_PROBE_BATCH)
        probe = TrainConfig(blocks=config.blocks, k=config.k, width=config.width, batch_size=batch, impl=config.impl,
                            precision=config.precision, threads=config.threads, data_dir="")
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
        speed = measure_images_per_s(config, device, batches, min_seconds=PROBE_MIN_S)
        with self._lock:
            self._speeds[self.key(config, device)] = speed
        return speed


def recent_pace(store: RunStore, config: TrainConfig, device: torch.device,
                host: str | None = None) -> tuple[float, Run] | None:
    """The pace of the newest run that finished on this machine (`host`) with the speed of `config` (the same
    model shape, batch, implementation, precision and threads, on this kind of device): its training images and
    its evaluations (at EVAL_COST a training image each) over its whole time, as `estimate_seconds` counts them,
    and the run. A real run's pace, with whatever was open beside it, tells the next run's time better than a
    probe on synthetic batches. None when no such run is there (a budgeted run does not count: its last epoch is
    partial)."""
    host, wanted = host or socket.gethostname(), SpeedCache.key(config, device)
    for run in store.runs():  # newest first
        try:
            meta = run.meta()  # the cheap checks first: most runs in a long list fail them
            if meta.get("status") != "finished" or meta.get("host") != host:
                continue
            done, record = run.config(), run.config_record()
            if done.time_budget or SpeedCache.key(done, torch.device(record["device_type"])) != wanted:
                continue
            evaluated = (record["val_images"] + CIFAR10_TEST_IMAGES / done.eval_every) * (2 if done.tta_flip else 1)
            work = (record["train_images"] + evaluated * EVAL_COST) * meta["epochs_done"]
            if work > 0 and meta["seconds"] > 0:
                return work / meta["seconds"], run
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            continue
    return None
