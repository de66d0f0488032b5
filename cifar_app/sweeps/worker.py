"""A sweep's worker: `python -m cifar_app.sweep work NAME` pulls trials from the study until its budget is spent.

It checks that this machine has the sweep's device and loads the data once, then claims trials (sweeps/claims.py:
never beyond the budget), trains each with the one training loop as an ordinary run, reports every epoch's
validation accuracy to the pruner, and tells Optuna how it ended; the objective is the last epoch's. While a
trial trains it beats (database storages), reads the sweep's stop flag and its trial's state every STOP_CHECK_S
seconds, and fails the trials of dead workers every half grace period. A trial another process ended under it
(taken for dead while the database was away) ends its run cleanly with the reason; the worker takes the next.
The database going away for a while is waited out; a worker whose device is absent stops without taking a trial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from cifar_app.config import ConfigError, TrainConfig
from cifar_app.data.dataset import load_cifar10
from cifar_app.data.formats import DataFormatError, DataNotFound
from cifar_app.device import DeviceError, describe_device, pick_device
from cifar_app.engine.launcher import start_process
from cifar_app.engine.loop import RunResult, train
from cifar_app.engine.memory import check_memory, own_rss
from cifar_app.events import EpochEvent, Event
from cifar_app.store.liveness import process_alive, process_start
from cifar_app.store.runs import Run, RunStore
from cifar_app.sweeps.claims import Heartbeat, claim_trial, interrupted, look_after, requeue_interrupted
from cifar_app.sweeps.spec import STATE_NAMES, SweepSpec, load_sweep, stop_requested
from cifar_app.sweeps.storage import SweepError, SweepStorage, is_storage_error

log = logging.getLogger(__name__)
STOP_CHECK_S = 1.0  # how often a training worker reads the stop flag and its trial's state (two storage reads)
PRUNE_WHY = {"median": "below the median of earlier trials of its length at that epoch",
             "hyperband": "not among the best of its Hyperband bracket"}


@dataclass
class Worker:
    """What one worker process holds: the sweep, where it writes, and how long it waits out a lost database."""

    study: optuna.Study
    spec: SweepSpec
    storage: SweepStorage
    store: RunStore
    quit: threading.Event
    echo: Callable[[str], None]
    ran: dict[str, int] = field(default_factory=dict)

    @property
    def patience_s(self) -> float:
        return max(120.0, 3.0 * self.spec.grace_s)

    def retrying(self, action: Callable[[], Any], what: str) -> Any:
        return self.storage.retrying(action, self.patience_s, what, self.echo)

    def set_attr(self, trial: optuna.Trial, key: str, value: Any) -> bool:
        """Record a trial attribute, waiting out a lost database; False when the trial was ended elsewhere."""
        try:
            self.retrying(lambda: trial.set_user_attr(key, value), f"record trial {trial.number}'s {key}")
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    def state_of(self, trial: optuna.Trial) -> TrialState:
        return self.retrying(lambda: self.study._storage.get_trial(trial._trial_id).state,
                             f"read trial {trial.number}'s state")


class TrialRunStore(RunStore):
    """The run store, writing the sweep and trial into each new run's config record (and the run's id into
    the trial), so the Runs page can name a trial's sweep and the Sweeps page open a trial's run."""

    def __init__(self, worker: Worker, trial: optuna.Trial, watcher: "TrialWatcher"):
        super().__init__(worker.store.root)
        self.worker, self.trial, self.watcher = worker, trial, watcher
        self.run: Run | None = None

    def create(self, config: TrainConfig, record: dict[str, Any], name: str = "", run_id: str = "") -> Run:
        record = {**record, "sweep": self.worker.spec.name, "trial": self.trial.number}
        self.run = super().create(config, record, name, run_id)
        try:
            kept = self.worker.set_attr(self.trial, "run_id", self.run.id)
        except BaseException as error:  # the run exists: failed with the reason, not "running" until it goes stale
            self.run.update_meta(status="failed", ended=time.time(),
                                 reason=f"the run could not start: {type(error).__name__}: {error}")
            raise
        if not kept:
            self.watcher.ended_elsewhere()
        return self.run


class TrialWatcher:
    """A trial's on_event: reports each epoch's validation accuracy to Optuna and asks the pruner; stops the run
    (within one batch) when the pruner says so, when the sweep is stopped, when this worker is told to end, or
    when another process ended the trial. A database that cannot be reached does not stop it: reports wait."""

    def __init__(self, worker: Worker, trial: optuna.Trial):
        self.worker, self.trial = worker, trial
        self.stop = threading.Event()
        self.pruned_after: int | None = None
        self.stopped_by: str | None = None  # sweep, worker, elsewhere
        self.pending: list[tuple[float, int]] = []  # (value, epoch) not yet stored
        self.last_check = self.last_look = time.monotonic()

    def __call__(self, event: Event) -> None:
        if isinstance(event, EpochEvent) and event.val_acc is not None:
            self.pending.append((event.val_acc, event.epoch))
            self.worker.echo(f"trial {self.trial.number}: epoch {event.epoch}/{event.epochs} validation accuracy "
                             f"{event.val_acc:.2f}% ({event.seconds:.0f} s)")
            if self._storage(self._flush) and event.epoch < event.epochs and self._storage(self.trial.should_prune):
                self.pruned_after = event.epoch
                self.stop.set()
        if self.stop.is_set():
            return
        if self.worker.quit.is_set():
            self.stopped_by = "worker"
            self.stop.set()
        elif time.monotonic() - self.last_check >= STOP_CHECK_S:
            self.last_check = time.monotonic()
            self._storage(self._check)

    def ended_elsewhere(self) -> None:
        self.stopped_by = "elsewhere"
        self.stop.set()

    def _flush(self) -> bool:
        while self.pending:
            self.trial.report(*self.pending[0])
            self.pending.pop(0)
        return True

    def _check(self) -> bool:
        worker = self.worker
        if stop_requested(worker.study):
            self.stopped_by = "sweep"
            self.stop.set()
        elif worker.study._storage.get_trial(self.trial._trial_id).state != TrialState.RUNNING:
            self.ended_elsewhere()
        elif time.monotonic() - self.last_look >= worker.spec.grace_s / 2:
            self.last_look = time.monotonic()
            look_after(worker.study, worker.storage)  # a dead worker's trial is re-queued while this one trains
        return self._flush()

    def _storage(self, action: Callable[[], bool]) -> bool:
        """`action()` against the storage, once: False when it could not be done just now."""
        try:
            return action()
        except optuna.exceptions.UpdateFinishedTrialError:
            self.ended_elsewhere()
        except SweepError as error:
            log.warning("%s", error)
        except Exception as error:
            if not is_storage_error(error):
                raise
            log.warning("the sweep storage cannot be reached just now (%s); training goes on",
                        self.worker.storage.first_line(error))
        return False


def run_trial(worker: Worker, trial: optuna.Trial, params: dict[str, Any], data: Any) -> str:
    """Train and tell one claimed trial; its final state's name. Raises SweepError when this machine cannot train
    the sweep's trials (its device failed): the trial is left to be run again elsewhere."""
    spec = worker.spec
    worker.echo(f"trial {trial.number}: " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                                      for k, v in params.items()))
    watcher = TrialWatcher(worker, trial)
    beating = Heartbeat(worker.study, trial, spec.heartbeat_s) if worker.storage.is_database else None
    with beating or contextlib.nullcontext():
        try:
            config = spec.trial_config(params, trial.number)
            too_big = check_memory(config.check(), pick_device(config.device), in_use=own_rss()).problem()
            if too_big:  # this trial's batch and shape, before a process full of them takes the machine
                raise ConfigError([too_big])
            result = train(config, data=data, on_event=watcher, stop=watcher.stop,
                           store=TrialRunStore(worker, trial, watcher))
        except DeviceError as error:
            _interrupt(worker, trial, f"its worker's device failed: {error}")
            raise SweepError(f"this worker stops: {error}") from None
        except (ConfigError, DataNotFound, DataFormatError, ValueError) as error:
            reason = "; ".join(error.problems) if isinstance(error, ConfigError) else str(error)
            return _tell(worker, trial, TrialState.FAIL, reason=f"could not start: {reason}")
        except SweepError as error:  # the database stayed away past the worker's patience
            raise SweepError(f"this worker stops: {error}") from None
        except Exception as error:  # a bug in one trial's setup must not end the worker: the sweep goes on
            log.exception("trial %d could not start", trial.number)
            return _tell(worker, trial, TrialState.FAIL, reason=f"could not start: {type(error).__name__}: {error}")
        return _conclude(worker, trial, watcher, result)


def _conclude(worker: Worker, trial: optuna.Trial, watcher: TrialWatcher, result: RunResult) -> str:
    """Tell Optuna how a trained trial ended: complete with its last epoch's validation accuracy, pruned, or
    failed; an interruption (a stop) is queued to run again, a trial ended elsewhere is left as it is."""
    last = result.history[-1] if result.history else None
    if watcher.stopped_by == "elsewhere":
        frozen = worker.retrying(lambda: worker.study._storage.get_trial(trial._trial_id), "read the trial")
        why = frozen.user_attrs.get("reason") or (f"its heartbeat did not reach the database for over "
                                                  f"{worker.spec.grace_s} s")
        reason = f"trial {trial.number} was ended by another process ({why})" + (
            "; it is run again" if interrupted(frozen) else "")
        if result.run is not None:
            result.run.update_meta(reason=reason + "; this run can be resumed from the Runs page")
        worker.echo(reason)
        return STATE_NAMES.get(frozen.state, "failed")
    for key, value in (("epochs_done", last.epoch if last else 0), ("seconds", round(result.seconds, 1)),
                       ("test_acc", last.test_acc if last else None)):
        worker.set_attr(trial, key, value)
    if watcher.pruned_after is not None:
        reason = (f"pruned after epoch {watcher.pruned_after} of {last.epochs}: validation accuracy "
                  f"{last.val_acc:.2f}% was {PRUNE_WHY.get(worker.spec.pruner, 'below the bar')}")
        if result.run is not None:
            result.run.update_meta(reason=reason + " (it can be resumed from the Runs page)")
        return _tell(worker, trial, TrialState.PRUNED, reason=reason)
    if result.status == "finished" and last is not None and last.val_acc is not None:
        return _tell(worker, trial, TrialState.COMPLETE, value=last.val_acc)
    if result.status == "stopped" and watcher.stopped_by in ("sweep", "worker"):
        why = {"sweep": "the sweep was stopped", "worker": "its worker was told to end"}[watcher.stopped_by]
        worker.set_attr(trial, "stopped", True)  # a person's stop: the Sweeps page says 'stopped', not 'failed'
        state = _interrupt(worker, trial, f"{why} during epoch {len(result.history) + 1}; it is run again")
        return "stopped" if state == "failed" else state
    return _tell(worker, trial, TrialState.FAIL, reason=result.reason or "it ended without a validation accuracy")


def _interrupt(worker: Worker, trial: optuna.Trial, reason: str) -> str:
    """Fail a trial that got no verdict (a stop, a lost device) and queue its re-run, under the claim lock: its
    slot of the budget passes to the re-run, so no other worker counts the sweep as finished meanwhile."""
    def under_lock() -> str:
        with worker.storage.claim_lock(worker.spec.name):
            worker.set_attr(trial, "interrupted", True)
            state = _tell(worker, trial, TrialState.FAIL, reason=reason)
            requeue_interrupted(worker.study)
            return state
    return worker.retrying(under_lock, f"record that trial {trial.number} was interrupted")


def _tell(worker: Worker, trial: optuna.Trial, state: TrialState, value: float | None = None,
          reason: str = "") -> str:
    """Tell Optuna; the state the trial has now (another process may have ended it first)."""
    if reason:
        worker.set_attr(trial, "reason", reason)
    values = value if state == TrialState.COMPLETE else None
    try:  # skip_if_finished: another process that took this worker for dead may have ended it first
        worker.retrying(lambda: worker.study.tell(trial, values, state=state, skip_if_finished=True),
                        f"tell Optuna how trial {trial.number} ended")
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("trial %d was already marked finished by another process", trial.number)
    return STATE_NAMES.get(worker.state_of(trial), "failed")


def check_device(spec: SweepSpec) -> str:
    """The device this machine trains the sweep's trials on, in words; SweepError when it has none of that kind."""
    try:
        return describe_device(pick_device(spec.base.device))
    except DeviceError as error:
        raise SweepError(f"this worker cannot train the sweep's trials here: {error} It took no trial; start it "
                         f"on a machine with that device (the sweep's trials ask for device {spec.base.device!r}).") \
            from None


def work(name: str, storage: SweepStorage, *, data_dir: str | None = None, quit: threading.Event | None = None,
         echo: Callable[[str], None] = log.info, data: Any = None,
         on_loaded: Callable[[], None] | None = None) -> dict[str, int]:
    """Pull and train trials of sweep `name` until its budget is spent, it is stopped, or `quit` is set;
    {state: trials} of what this worker ran. `data` (a Cifar10) skips loading; else the spec's data folder
    (or `data_dir`) is read once for every trial, and `on_loaded` is called after. SweepError when this machine
    lacks the sweep's device (no trial taken) or the storage stayed unreachable."""
    study, spec = load_sweep(name, storage)
    if data_dir:
        spec.base = spec.base.replace(data_dir=data_dir)
    where = check_device(spec)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    if data is None:
        echo(f"worker {os.getpid()} on {socket.gethostname()} ({where}"
             + (f", CUDA_VISIBLE_DEVICES={gpus}" if gpus is not None else "")
             + f"): loading CIFAR-10 from {spec.base.data_dir}")
        data = load_cifar10(spec.base.data_dir)  # DataNotFound/DataFormatError: the CLI says it; no trial taken
    if on_loaded is not None:
        on_loaded()
    worker = Worker(study, spec, storage, RunStore(storage.runs_dir), quit or threading.Event(), echo)
    while not worker.quit.is_set():
        asked = time.monotonic()
        claimed = worker.retrying(lambda: claim_trial(study, spec, storage), "claim a trial")
        if claimed is None:
            if worker.retrying(lambda: stop_requested(study), "read the stop flag"):
                echo(f"sweep {name} is stopped: this worker takes no trial (Go on, on the Sweeps page, resumes it)")
            break
        trial, params = claimed
        worker.set_attr(trial, "claim_s", round(time.monotonic() - asked, 3))
        state = run_trial(worker, trial, params, data)
        worker.ran[state] = worker.ran.get(state, 0) + 1
        frozen = worker.retrying(lambda: study._storage.get_trial(trial._trial_id), "read the trial")
        outcome = (f"validation accuracy {frozen.value:.2f}% at its last epoch" if frozen.value is not None
                   else frozen.user_attrs.get("reason", "ended by another process"))
        echo(f"trial {trial.number} {state}: {outcome}")
    with contextlib.suppress(SweepError):
        worker.retrying(lambda: look_after(study, storage), "look after the sweep's trials")
    return worker.ran


# -- starting workers on this machine ----------------------------------------------------------------------


def worker_command(name: str, storage: SweepStorage) -> list[str]:
    """A worker's command line. The storage's URL (and its password) goes in the environment, never here:
    every user of the machine can read every command line."""
    return [sys.executable, "-m", "cifar_app.sweep", "work", name, "--runs-dir", str(storage.runs_dir.resolve())]


def visible_gpus(gpus: int) -> list[str]:
    """The GPUs this process was given, as CUDA_VISIBLE_DEVICES names them (a parent given `2,3` hands its
    workers 2 and 3, not 0 and 1); without it, 0..gpus-1."""
    given = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return given[:gpus] if given else [str(i) for i in range(gpus)]


def launch_workers(name: str, storage: SweepStorage, count: int, gpus: int = 0,
                   terminal: bool = False) -> list[subprocess.Popen]:
    """Start `count` worker processes for sweep `name` on this machine, detached from the caller's session (an
    app restart leaves them training); with GPUs, each sees one of those this process sees, round-robin.
    Their output goes to the sweeps folder's logs/ (or, with `terminal`, to this one). They start as the app's
    training runs do (engine.launcher)."""
    logs = storage.folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    devices, processes = visible_gpus(gpus), []
    for i in range(count):
        env = {**os.environ, **storage.worker_env()}
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
        else:  # workers on one CPU share its cores rather than each spinning on all of them
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
        # the app's own launcher: a process of its own (an app restart leaves it), reaped when it ends
        processes.append(start_process(worker_command(name, storage)[2:], None if terminal else
                                       logs / f"{name}-{stamp}-{i}.log", env, detach=not terminal))
    return processes


def workers_here(study: optuna.Study) -> list[dict[str, Any]]:
    """The worker processes started on this machine for this sweep (by any app or terminal) that still run."""
    started = study._storage.get_study_user_attrs(study._study_id).get(f"workers@{socket.gethostname()}", [])
    return [w for w in started if process_alive(int(w["pid"]), w.get("pid_start"))]


def start_workers_here(study: optuna.Study, spec: SweepSpec, storage: SweepStorage, count: int,
                       gpus: int = 0) -> int:
    """See that `count` workers of this sweep run on this machine: start those missing (none when a second tab,
    or a second app, asks again) and clear the stop flag. Under the claim lock; how many were started."""
    with storage.reachable(), storage.claim_lock(spec.name):
        alive = workers_here(study)
        started = launch_workers(spec.name, storage, count - len(alive), gpus) if count > len(alive) else []
        alive += [{"pid": p.pid, "pid_start": process_start(p.pid)} for p in started]
        study.set_user_attr(f"workers@{socket.gethostname()}", alive)
        study.set_user_attr("stop", False)
    return len(started)
