"""The training loop, shared by the dashboard's background job and `python -m cifar_app.train`.

`train(config)` runs one training run end to end, reading top to bottom:
  prepare     check the config, pick the device, load and split the data;
  begin       a new run or a fork (its parent's weights), or `resume` a saved one from its checkpoint;
  EpochLoop   each epoch: its batches through the TrainingStep (model/step.py), reported a few times a second by
              the Reporter (loss, pace, ETA, heartbeat, a checkpoint every minute or so), then the
              evaluation, the metrics row and the checkpoints;
  finish      how it ended, written to the run's meta.json.
Events (cifar_app.events) go to `on_event`. A `threading.Event` stops it within one batch, or within one evaluation
batch at an epoch's end, keeping what was learned in the run's checkpoint. A loss that turns NaN/inf ends the
run with a reason; so does running out of memory. Every run writes its folder in the run store (store/runs.py).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cifar_app.config import ConfigError, TrainConfig
from cifar_app.data.dataset import Cifar10
from cifar_app.device import describe_device, is_out_of_memory
from cifar_app.engine.budget import Budget, BudgetSchedule, plan_run, report
from cifar_app.engine.evaluation import accuracy, predict_logits
from cifar_app.engine.recorder import start_recording
from cifar_app.engine.reporter import REPORT_INTERVAL_S, Reporter, StopRequested, TrainingDiverged
from cifar_app.engine.schedule import Schedule, attention_temperature
from cifar_app.engine.setup import Setup, prepare, run_record
from cifar_app.events import (
    EndEvent, EpochEvent, Event, History, ResumeEvent, StatusEvent, best_epoch, records_from_rows,
)
from cifar_app.model.network import summarize
from cifar_app.model.step import TrainingStep
from cifar_app.store.lineage import RESUME_RUNTIME_FIELDS, check_resume_data, fork_problems, other_data
from cifar_app.store.live import LiveLog
from cifar_app.store.records import save_predictions
from cifar_app.store.runs import Run, RunStore

log = logging.getLogger(__name__)
CHECKPOINT_EVERY_S = 60.0  # within an epoch, a kill loses at most about this much training


@dataclass
class RunResult(History):
    status: str  # finished, stopped or failed
    reason: str
    history: list[EpochEvent] = field(default_factory=list)
    run: Run | None = None
    seconds: float = 0.0  # the run's training time, earlier sessions of a resumed run included

    def summary_lines(self) -> list[str]:
        lines = [f"run {self.status}" + (f": {self.reason}" if self.reason else ""), *self.figure_lines()]
        lines.append(f"time {self.seconds:.1f} s" + (f"; saved in {self.run.path}" if self.run else ""))
        return lines


# An epoch's running sums, kept in a checkpoint: its loss and correct answers so far, the images trained, and its
# wall and training seconds in earlier sessions (an epoch stopped and resumed is one epoch, timed as one).
EMPTY_SUMS = {"loss_sum": 0.0, "correct": 0.0, "seen": 0.0, "epoch_s": 0.0, "train_s": 0.0}


@dataclass
class Position:
    """Where a run is: epochs done, batches done of the next epoch with their running sums, the training
    time and images so far (over every session of the run), its epochs, and where its schedule starts."""

    epoch: int = 0
    batch: int = 0
    sums: dict[str, float] = field(default_factory=lambda: dict(EMPTY_SUMS))
    elapsed_s: float = 0.0
    images: int = 0
    history: list[EpochEvent] = field(default_factory=list)
    schedule_start: int = 0  # a fork's branch epoch: its learning-rate schedule starts there
    records: dict[str, Any] | None = None  # the per-image record of the epoch under way, from a checkpoint

    def checkpoint(self, step: TrainingStep, config: TrainConfig, classes: tuple[str, ...]) -> dict[str, Any]:
        return {**step.state(), "epoch": self.epoch, "batch": self.batch, "accum": dict(self.sums),
                "elapsed_s": self.elapsed_s, "images": self.images, "config": config.to_dict(),
                "classes": list(classes), "temperature": step.model.temperature()}


def train(
    config: TrainConfig,
    *,
    data: Cifar10 | None = None,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    store: RunStore | None = None,
    resume: Run | None = None,
    fork: tuple[Run, str] | None = None,
    report_interval_s: float = REPORT_INTERVAL_S,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
    run_id: str = "",
) -> RunResult:
    """Train as `config` says; return how it ended. With `store`, the run is saved as it goes.

    `resume` continues a saved run from its last checkpoint with its own config (only where-and-how fields of
    `config` such as the device apply). `fork=(run, 'best'|'last')` starts a new run from that checkpoint's
    weights with `config`'s hyperparameters, numbering epochs on from the branch point. A BatchEvent goes out
    every `report_interval_s` seconds (each one reads the loss back from the device); a saved run also
    checkpoints every `checkpoint_every_s` seconds within an epoch, and writes every event into the run's live
    log (store/live.py) for a process that watches; `run_id` names the folder to make the run in (one the app's
    launcher reserved).
    Raises ConfigError, DeviceError, DataNotFound or DataFormatError before anything is written; every
    failure after that ends in a RunResult with status 'failed' and the reason.
    """
    live = LiveLog(resume.path if resume else store.root / run_id if store is not None and run_id else None)
    listener = on_event or (lambda event: None)

    def emit(event: Event) -> None:
        listener(event)
        if store is not None or resume is not None:
            live(event)

    started = time.monotonic()  # a time budget counts from here: loading the data is part of the run
    saved = None
    if resume is not None:
        config = resume.config().replace(**{k: getattr(config, k) for k in RESUME_RUNTIME_FIELDS})
        saved = resume.load_checkpoint("last")
        if saved["epoch"] >= config.epochs:
            return RunResult("finished", "this run had already finished",
                             records_from_rows(resume.metrics(), config.epochs), resume)
    setup = prepare(config, data, emit)
    check_resume_data(resume, setup.data.fingerprint)  # DataMismatch before anything is written
    budget = plan_run(setup, started, emit, saved, fork)  # None without a time budget; fits setup.config to it
    step = TrainingStep(setup.config, setup.device, on_fallback=lambda message: emit(StatusEvent(message)))
    emit(StatusEvent(f"Training on {describe_device(setup.device)}: {summarize(step.model).describe()}"))
    if resume is not None:
        run, position = resume, continue_run(resume, saved, step, setup, emit)
    else:
        run, position = begin_run(setup, step, store, fork, run_id)
        if run is not None and live.path is None:
            live.attach(run.path)
    try:
        loop = EpochLoop(setup, step, run, position, emit, stop or threading.Event(), report_interval_s,
                         checkpoint_every_s, budget)
    except Exception as error:  # after the run exists (its record's set-up): a failed run, not a "running" one
        log.exception("the run could not start")
        result = finish(run, "failed", f"the run could not start: {type(error).__name__}: {error}", position)
    else:
        result = finish(run, *loop.run_epochs(), position)
        if budget is not None:
            emit(StatusEvent(report(budget, run, started, result.status, position.images // setup.config.batch_size)))
    emit(EndEvent(result.status, result.reason, result.seconds, result.summary_lines()))
    return result


def begin_run(setup: Setup, step: TrainingStep, store: RunStore | None, fork: tuple[Run, str] | None,
              run_id: str = "") -> tuple[Run | None, Position]:
    """A new run folder, starting from scratch or, for a fork, from its parent's checkpoint."""
    position, record = Position(), run_record(setup, step)
    if fork is not None:
        parent, which = fork
        problems = fork_problems(parent, which, setup.config)
        if problems:
            raise ConfigError(problems)
        branch = parent.load_checkpoint(which)
        step.model.load_weights(branch["model"], branch.get("temperature", 1.0))  # fork_problems checked the shape
        position.epoch = position.schedule_start = branch["epoch"]
        record.update(parent=parent.id, parent_epoch=branch["epoch"], parent_checkpoint=which,
                      parent_data="other" if other_data(parent, setup.data.fingerprint) else "same")
        if record["parent_data"] == "other":  # the Train page said so before Start; a terminal hears it here
            log.warning("this fork trains on other data than its parent %s: its per-image record starts afresh", parent.name)
    run = store.create(setup.config, record, name=setup.config.name, run_id=run_id) if store is not None else None
    return run, position


def continue_run(run: Run, saved: dict[str, Any], step: TrainingStep, setup: Setup,
                 emit: Callable[[Event], None]) -> Position:
    """The model, optimizer and loop state of a saved run's last checkpoint; its metrics cut back to it."""
    step.load(saved, saved.get("temperature", 1.0))
    rows = [r for r in run.metrics() if r["epoch"] <= saved["epoch"]]
    run.write_metrics(rows)  # an epoch logged after the checkpoint was written is trained again
    origin = run.parent()
    position = Position(
        epoch=saved["epoch"], batch=saved["batch"], sums=dict(saved["accum"]),
        # checkpoints from before these were kept: the epochs' own seconds, and no pace to start from
        elapsed_s=saved.get("elapsed_s", sum(r["seconds"] or 0 for r in rows)), images=saved.get("images", 0),
        history=records_from_rows(rows, setup.config.epochs), schedule_start=origin[1] if origin else 0,
        records=saved.get("records"),
    )
    run.claim(heartbeat=time.time(), resumed=time.time())
    resumed = ResumeEvent(run.id, position.epoch, position.batch, list(position.history), len(setup.loader))
    emit(StatusEvent(f"Resuming {run.name} at {resumed.where()}"))
    emit(resumed)
    return position


def finish(run: Run | None, status: str, reason: str, position: Position) -> RunResult:
    result = RunResult(status, reason, position.history, run, position.elapsed_s)
    if run is not None:
        best, final = result.best, result.final
        run.update_meta(
            status=status, reason=reason, ended=time.time(), seconds=position.elapsed_s,
            best_epoch=best.epoch if best else None, best_test_acc=best.test_acc if best else None,
            best_val_acc=best.val_acc if best else None, final_test_acc=final.test_acc if final else None,
            epochs_done=position.history[-1].epoch if position.history else 0, selection=result.selection,
        )
    return result


class EpochLoop:
    """Epochs from `position` to the config's last: train, evaluate, record, checkpoint."""

    def __init__(self, setup: Setup, step: TrainingStep, run: Run | None, position: Position,
                 emit: Callable[[Event], None], stop: threading.Event, report_interval_s: float,
                 checkpoint_every_s: float, budget: Budget | None = None):
        self.setup, self.config, self.step, self.run, self.position = setup, setup.config, step, run, position
        self.emit, self.stop = emit, stop
        # with a time budget the schedule moves the run's last epoch (config.epochs) as it measures the pace
        self.schedule = (BudgetSchedule.for_run(setup, run, budget, position.schedule_start) if budget is not None
                         else Schedule(setup.config, len(setup.loader), position.schedule_start))
        self.reporter = Reporter(setup, run, position, emit, stop, report_interval_s, checkpoint_every_s)
        self.reporter.batches_of = self.schedule.batches
        self.logits: dict[str, torch.Tensor] = {}  # the last evaluation's, per split
        self.records = start_recording(run, setup.config, setup.loader, setup.train_index, setup.test[1], position)

    def run_epochs(self) -> tuple[str, str]:
        """(status, reason): finished, stopped (by the user) or failed (with why)."""
        position, config = self.position, self.config
        try:
            for epoch in itertools.count(position.epoch):
                if epoch >= config.epochs:  # read at each epoch: a time budget's schedule may move it
                    break
                if not self.train_epoch(epoch):
                    self.save()
                    return "stopped", f"stopped by the user at epoch {epoch + 1}, batch {position.batch} of " \
                                      f"{len(self.setup.loader)}"
                try:
                    event = self.evaluate(epoch)
                except StopRequested:
                    position.sums["epoch_s"] = time.monotonic() - self.epoch_start
                    self.save()
                    return "stopped", f"stopped by the user while evaluating epoch {epoch + 1}; resume " \
                                      "evaluates it and goes on"
                self.end_epoch(event)
                if self.stop.is_set() and epoch + 1 < config.epochs:
                    return "stopped", f"stopped by the user after epoch {epoch + 1}"
        except TrainingDiverged as error:
            return "failed", str(error)
        except KeyboardInterrupt:
            return "stopped", f"interrupted (Ctrl-C) in epoch {position.epoch + 1}; resume continues from the " \
                              "last checkpoint"
        except Exception as error:
            return "failed", self.failure(error)
        finally:
            position.elapsed_s = self.reporter.elapsed()
        return "finished", ""

    def train_epoch(self, epoch: int) -> bool:
        """The epoch's batches from `position.batch` on; False when Stop ended it early."""
        position, step, loader = self.position, self.step, self.setup.loader
        step.model.set_temperature(attention_temperature(self.config, epoch))
        step.model.train()
        device = self.setup.device
        loss_sum = torch.tensor(position.sums["loss_sum"], device=device)
        correct = torch.tensor(position.sums["correct"], device=device)
        seen = first_seen = int(position.sums["seen"])
        session_start = time.monotonic()
        self.epoch_start = session_start - position.sums.get("epoch_s", 0.0)  # earlier sessions' share counts
        trained_before = position.sums.get("train_s", 0.0)  # read once: a mid-epoch checkpoint rewrites the sums

        def sums() -> dict[str, float]:  # a session that trained no batch (resumed at the epoch's end) adds no time
            trained = trained_before + (time.monotonic() - session_start if seen > first_seen else 0)
            return {"loss_sum": loss_sum.item(), "correct": correct.item(), "seen": float(seen),
                    "epoch_s": time.monotonic() - self.epoch_start, "train_s": trained}

        self.reporter.start_epoch()
        self.records.begin_epoch(epoch, position.batch)
        for i, x, y in loader.batches(epoch, position.batch):
            if self.stop.is_set() or i >= self.schedule.batches(epoch):  # a budget's last epoch may be partial
                break
            lr = self.schedule.lr(epoch, i)
            step.set_lr(lr)
            logits, loss = step(x, y)
            self.records.batch(i, logits)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            position.batch, position.images = i + 1, position.images + len(y)
            self.reporter.batch(epoch, loss, lr)
            if self.reporter.checkpoint_due():
                self.save(sums=sums())
        position.sums = sums()
        if not math.isfinite(position.sums["loss_sum"]):
            raise TrainingDiverged(f"the training loss became {position.sums['loss_sum']} in epoch {epoch + 1}: "
                                   "the run diverged. Lower the learning rate or add warm-up.")
        self.lr = self.schedule.lr(epoch, max(0, position.batch - 1))
        self.epoch_pace = position.sums["seen"] / max(position.sums["train_s"], 1e-9)
        return position.batch >= self.schedule.batches(epoch)

    def evaluate(self, epoch: int) -> EpochEvent:
        """The epoch's figures: training loss and accuracy from its batches, then validation and test."""
        config, setup, position = self.config, self.setup, self.position
        last = epoch + 1 == config.epochs
        val_acc = self.accuracy(epoch, "validation", *setup.val) if len(setup.val[1]) else None
        test_acc = self.accuracy(epoch, "test", *setup.test) if (epoch + 1) % config.eval_every == 0 or last else None
        if last and self.run is not None:  # out-of-sample probabilities, for label-error search (analysis/labels)
            probs = {split: torch.softmax(logits, 1).cpu().numpy() for split, logits in self.logits.items()}
            save_predictions(self.run.path, epoch + 1, setup.val_index.numpy(),
                             probs.get("validation", np.zeros((0, 10))), probs["test"])
        seen = max(position.sums["seen"], 1.0)
        return EpochEvent(
            epoch=epoch + 1, epochs=config.epochs, train_loss=position.sums["loss_sum"] / seen,
            train_acc=100 * position.sums["correct"] / seen, val_acc=val_acc, test_acc=test_acc, lr=self.lr,
            seconds=time.monotonic() - self.epoch_start, images_per_s=self.epoch_pace,
        )

    def accuracy(self, epoch: int, split: str, images: torch.Tensor, labels: torch.Tensor) -> float:
        logits = predict_logits(
            self.step.model, images, self.setup.device, bf16=self.step.bf16, tta_flip=self.config.tta_flip,
            channels_last=self.step.channels_last,
            on_batch=lambda done, total: self.reporter.evaluating(epoch, split, done, total),
        )
        if split == "test":
            self.records.test(logits)
        self.logits[split] = logits
        return accuracy(logits, labels)

    def end_epoch(self, event: EpochEvent) -> None:
        """Record the epoch: the metrics row first (a crash between the writes retrains the epoch on resume),
        then the last checkpoint, and the best one when this epoch is the best so far."""
        position = self.position
        position.history.append(event)
        position.epoch, position.batch, position.sums = event.epoch, 0, dict(EMPTY_SUMS)
        if self.run is not None:
            self.run.append_metrics(event.row())
            self.records.end_epoch(event.epoch)
            self.save()
            if best_epoch(position.history) is event:
                self.save("best")
            self.run.heartbeat(progress={"epoch": event.epoch, "batch": 0, "batches": len(self.setup.loader)})
        self.emit(event)

    def save(self, which: str = "last", sums: dict[str, float] | None = None) -> None:
        if sums is not None:  # mid-epoch: the running sums as they are now
            self.position.sums = sums
        if self.run is None:
            return
        self.position.elapsed_s = self.reporter.elapsed()
        payload = self.position.checkpoint(self.step, self.config, self.setup.data.classes)
        budget = {"budget": self.schedule.budget.state()} if isinstance(self.schedule, BudgetSchedule) else {}
        self.run.save_checkpoint({**payload, "records": self.records.state(), **budget}, which)
        self.reporter.checkpointed()

    def failure(self, error: Exception) -> str:
        if self.setup.device.type == "cuda":
            torch.cuda.empty_cache()
        if is_out_of_memory(error):
            config = self.config
            return (f"out of memory on {describe_device(self.setup.device)} with batch size {config.batch_size}, "
                    f"width {config.width} and K={config.k}: lower the batch size or the width.")
        log.exception("training failed")
        return f"{type(error).__name__}: {error}"
