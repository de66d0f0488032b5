"""The training loop's live side: the loss window (one host sync per report), the pace and the ETAs, the
heartbeat in the run's meta.json, and when a checkpoint is due. Stop is heard here during evaluation.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from cifar_app.events import BatchEvent, EvalEvent, Event
from cifar_app.engine.schedule import EVAL_COST, eval_images
from cifar_app.store.liveness import HEARTBEAT_S
from cifar_app.store.runs import Run

if TYPE_CHECKING:  # the loop's own records of what it trains on and where it is
    from cifar_app.engine.loop import Position
    from cifar_app.engine.setup import Setup

REPORT_INTERVAL_S = 0.25  # how often the loss is read back from the device (one host sync each time)
PACE_WINDOW_S = 30.0  # images/s and the ETAs are measured over about this much recent training


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""


class StopRequested(Exception):
    """The stop flag was set during an evaluation pass."""


class Pace:
    """Images per second over the last `window_s` seconds: samples of (training time, images trained so far).
    Until two samples span some time, the `prior` pace (a resumed run's earlier one)."""

    def __init__(self, window_s: float = PACE_WINDOW_S, prior: float = 0.0):
        self.window_s, self.prior = window_s, prior
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, t: float, images: int) -> None:
        self.samples.append((t, images))
        while len(self.samples) > 2 and t - self.samples[1][0] >= self.window_s:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) >= 2 and self.samples[-1][0] - self.samples[0][0] > 1e-3:
            (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
            return (n1 - n0) / (t1 - t0)
        return self.prior


class Reporter:
    """The live side of the loop: the loss window (one host sync per report), the pace over the last
    PACE_WINDOW_S seconds of training, the ETAs, the heartbeat in meta.json, and when a checkpoint is due.

    Clocks count the whole run: a resumed run's elapsed time and pace go on from its checkpoint."""

    def __init__(self, setup: Setup, run: Run | None, position: Position, emit: Callable[[Event], None],
                 stop: threading.Event, interval_s: float, checkpoint_every_s: float):
        self.config, self.run, self.position, self.emit, self.stop = setup.config, run, position, emit, stop
        self.interval_s, self.checkpoint_every_s = interval_s, checkpoint_every_s
        self.batches, self.batch_size = len(setup.loader), setup.loader.batch_size
        self.test_images = len(setup.test[1])
        self.session_start = time.monotonic()
        self.elapsed_before = position.elapsed_s
        # the pace is measured on a clock that stops while the model is evaluated: it is the training pace
        self.pace = Pace(prior=position.images / position.elapsed_s if position.images and position.elapsed_s else 0)
        self.trained_s, self.epoch_clock = 0.0, time.monotonic()
        self.last_report = self.last_beat = self.last_checkpoint = time.monotonic()
        self.window_loss, self.window_batches = None, 0
        self.batches_of: Callable[[int], int] = lambda epoch: self.batches  # a time budget's last epoch: fewer

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.session_start

    def images_per_s(self) -> float:
        return self.pace.rate()

    def seconds_left(self, training: float, evaluating: float) -> float:
        """At the recent pace: `training` images still to train, `evaluating` images still to evaluate (each at
        EVAL_COST of a training image)."""
        return (training + evaluating * EVAL_COST) / max(self.images_per_s(), 1e-9)

    def eta(self, epoch: int, batch: int) -> tuple[float, float]:
        """Seconds until this epoch's training ends, and until the run ends (evaluations included)."""
        epoch_left = (self.batches_of(epoch) - batch) * self.batch_size
        epochs_after = self.config.epochs - epoch - 1
        return (self.seconds_left(epoch_left, 0),
                self.seconds_left(epoch_left + self.images_after(epoch),
                                  eval_images(self.config, self.test_images, epochs_after + 1)))

    def images_after(self, epoch: int) -> int:
        """Training images in the epochs after `epoch` (0-based)."""
        return sum(self.batches_of(e) for e in range(epoch + 1, self.config.epochs)) * self.batch_size

    def start_epoch(self) -> None:
        if self.pace.samples:  # the training clock goes on from the previous epoch's last report
            self.trained_s = self.pace.samples[-1][0]
        self.epoch_clock = time.monotonic()
        self.pace.add(self.trained_s, self.position.images)
        self.window_loss, self.window_batches = None, 0

    def batch(self, epoch: int, loss: torch.Tensor, lr: float) -> None:
        """After each optimiser step: add the loss to the window; report when the interval has passed."""
        self.window_loss = loss.detach() if self.window_loss is None else self.window_loss + loss.detach()
        self.window_batches += 1
        now, done = time.monotonic(), self.position.batch
        if now - self.last_report < self.interval_s and done < self.batches:
            return
        mean_loss = self.window_loss.item() / self.window_batches  # the one host sync of the window
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(f"the training loss became {mean_loss} at epoch {epoch + 1}, batch {done}: the run "
                                   f"diverged (learning rate {lr:.3g}). Lower the learning rate or add warm-up.")
        elapsed = self.elapsed()
        self.pace.add(self.trained_s + now - self.epoch_clock, self.position.images)
        epoch_eta, run_eta = self.eta(epoch, done)
        self.emit(BatchEvent(epoch=epoch + 1, epochs=self.config.epochs, batch=done, batches=self.batches,
                             loss=mean_loss, lr=lr, images_per_s=self.images_per_s(),
                             epoch_elapsed_s=now - self.epoch_clock, elapsed_s=elapsed, epoch_eta_s=epoch_eta,
                             run_eta_s=run_eta))
        self.window_loss, self.window_batches, self.last_report = None, 0, now
        self.heartbeat(epoch + 1, done)

    def evaluating(self, epoch: int, split: str, done: int, total: int) -> None:
        """After each evaluation batch: Stop interrupts here too; report and heartbeat on the interval."""
        if self.stop.is_set():
            raise StopRequested
        now = time.monotonic()
        if now - self.last_report < self.interval_s and done < total:
            return
        self.last_report = now
        epochs_after = self.config.epochs - epoch - 1
        run_eta = self.seconds_left(self.images_after(epoch),
                                    total - done + eval_images(self.config, self.test_images, epochs_after))
        self.emit(EvalEvent(epoch + 1, self.config.epochs, split, done, total, self.elapsed(), run_eta))
        self.heartbeat(epoch + 1, self.batches)

    def heartbeat(self, epoch: int, batch: int) -> None:
        if self.run is not None and time.monotonic() - self.last_beat > HEARTBEAT_S:
            self.run.heartbeat(progress={"epoch": epoch, "batch": batch, "batches": self.batches})
            self.last_beat = time.monotonic()

    def checkpoint_due(self) -> bool:
        return self.run is not None and time.monotonic() - self.last_checkpoint >= self.checkpoint_every_s

    def checkpointed(self) -> None:
        self.last_checkpoint = self.last_beat = time.monotonic()
