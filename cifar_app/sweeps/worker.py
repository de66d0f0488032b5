"""A sweep's worker: `python -m cifar_app.sweep work NAME` pulls trials from the study until its budget is spent.

It claims a trial under the claim lock (so two workers never exceed the budget), samples its hyperparameters,
trains it with the one training loop as an ordinary run, reports each epoch's validation accuracy to the pruner,
and tells Optuna how it ended. A worker whose process died leaves its trial `running`; the next claim (or the
page) asks the store's liveness rule, marks it failed, and the sweep goes on. Stop is a study attribute every
worker reads at most every STOP_CHECK_S seconds: the run ends within one batch.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cifar_app.config import ConfigError, TrainConfig
from cifar_app.data.dataset import load_cifar10
from cifar_app.data.formats import DataFormatError, DataNotFound
from cifar_app.device import DeviceError
from cifar_app.engine.loop import train
from cifar_app.events import EpochEvent, Event
from cifar_app.store.liveness import dead_reason as process_dead_reason, process_start
from cifar_app.store.runs import Run, RunStore
from cifar_app.sweeps.spec import STATE_NAMES, SweepSpec, load_sweep, stop_requested
from cifar_app.sweeps.storage import SweepStorage

log = logging.getLogger(__name__)
STOP_CHECK_S = 1.0  # how often a training worker reads the sweep's stop flag (one storage read)


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid)}


def dead_reason(trial: FrozenTrial, store: RunStore) -> str | None:
    """Why a `running` trial's worker is taken for dead, or None while it may be alive: the store's one liveness
    rule (store.liveness) on the worker's host and pid and its run's heartbeat (before the run exists, the
    trial's start stands in for it)."""
    worker, run_id = trial.user_attrs.get("worker") or {}, trial.user_attrs.get("run_id")
    run = Run(store.root / run_id) if run_id and (store.root / run_id / "meta.json").is_file() else None
    beat = run.meta().get("heartbeat") if run else None
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    why = process_dead_reason(worker.get("host"), worker.get("pid"), worker.get("pid_start"), beat)
    if why is None:
        return None
    done = len(trial.intermediate_values)
    where = f" during epoch {done + 1}" + (f"; its run {run_id} keeps what it learned (Runs page: resume or fork)"
                                           if run else "")
    return f"its worker {why.removeprefix('its process ')}{where}"


def fail_dead_trials(study: optuna.Study, store: RunStore) -> list[int]:
    """Mark the running trials whose worker died as failed, with the reason; their numbers."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = dead_reason(trial, store)
        if reason is None:
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "reason", reason)
            study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process marked it (or the worker finished it) first
        log.warning("trial %d failed: %s", trial.number, reason)
        failed.append(trial.number)
    return failed


class TrialRunStore(RunStore):
    """The run store, writing the sweep and trial into each new run's config record (and the run's id into
    the trial), so the Runs page can name a trial's sweep and the Sweeps page open a trial's run."""

    def __init__(self, root: Path, sweep: str, trial: optuna.Trial):
        super().__init__(root)
        self.sweep, self.trial = sweep, trial
        self.run: Run | None = None

    def create(self, config: TrainConfig, record: dict[str, Any], name: str = "", run_id: str = "") -> Run:
        self.run = super().create(config, {**record, "sweep": self.sweep, "trial": self.trial.number}, name, run_id)
        self.trial.set_user_attr("run_id", self.run.id)
        return self.run


class TrialWatcher:
    """A trial's on_event: reports each epoch's validation accuracy to Optuna and asks the pruner; stops the run
    (within one batch) when the pruner says so, when the sweep is stopped (read every STOP_CHECK_S seconds),
    or when this worker is told to end."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, quit: threading.Event,
                 echo: Callable[[str], None]):
        self.study, self.trial, self.quit, self.echo = study, trial, quit, echo
        self.stop = threading.Event()
        self.pruned_after: int | None = None
        self.stopped_by: str | None = None
        self.last_check = time.monotonic()

    def __call__(self, event: Event) -> None:
        if isinstance(event, EpochEvent) and event.val_acc is not None:
            self.trial.report(event.val_acc, event.epoch)
            self.echo(f"trial {self.trial.number}: epoch {event.epoch}/{event.epochs} validation accuracy "
                      f"{event.val_acc:.2f}% ({event.seconds:.0f} s)")
            if event.epoch < event.epochs and self.trial.should_prune():
                self.pruned_after = event.epoch
                self.stop.set()
        if self.stop.is_set():
            return
        if self.quit.is_set():
            self.stopped_by = "worker"
            self.stop.set()
        elif time.monotonic() - self.last_check >= STOP_CHECK_S:
            self.last_check = time.monotonic()
            if stop_requested(self.study):
                self.stopped_by = "sweep"
                self.stop.set()


PRUNE_WHY = {"median": "below the median of earlier trials at that epoch",
             "hyperband": "not among the best of its Hyperband bracket"}


def run_trial(study: optuna.Study, trial: optuna.Trial, spec: SweepSpec, data: Any, store: RunStore,
              quit: threading.Event, echo: Callable[[str], None]) -> str:
    """Sample, train and tell one trial; its final state's name."""
    params = spec.space.suggest(trial)
    echo(f"trial {trial.number}: " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in params.items()))
    watcher = TrialWatcher(study, trial, quit, echo)
    trial_store = TrialRunStore(store.root, spec.name, trial)
    try:
        result = train(spec.trial_config(params, trial.number), data=data, on_event=watcher, stop=watcher.stop,
                       store=trial_store)
    except (ConfigError, DeviceError, DataNotFound, DataFormatError, ValueError) as error:
        reason = "; ".join(error.problems) if isinstance(error, ConfigError) else str(error)
        return _tell(study, trial, TrialState.FAIL, reason=f"could not start: {reason}")
    except Exception as error:  # a bug in one trial's setup must not end the worker: the sweep goes on
        log.exception("trial %d could not start", trial.number)
        return _tell(study, trial, TrialState.FAIL, reason=f"could not start: {type(error).__name__}: {error}")
    best = result.best
    trial.set_user_attr("epochs_done", result.history[-1].epoch if result.history else 0)
    trial.set_user_attr("seconds", round(result.seconds, 1))
    if best is not None:
        trial.set_user_attr("test_acc", best.test_acc)
        trial.set_user_attr("best_epoch", best.epoch)
    if watcher.pruned_after is not None:
        last = result.history[-1]
        reason = (f"pruned after epoch {watcher.pruned_after} of {last.epochs}: validation accuracy "
                  f"{last.val_acc:.2f}% was {PRUNE_WHY.get(spec.pruner, 'below the bar')}")
        if result.run is not None:
            result.run.update_meta(reason=reason + " (it can be resumed from the Runs page)")
        return _tell(study, trial, TrialState.PRUNED, reason=reason)
    if result.status == "finished" and best is not None and best.val_acc is not None:
        return _tell(study, trial, TrialState.COMPLETE, value=best.val_acc)
    if result.status == "stopped":
        why = {"sweep": "the sweep was stopped", "worker": "its worker was told to end"}.get(watcher.stopped_by, "")
        done = len(result.history)
        trial.set_user_attr("interrupted", True)  # a stop is no verdict on the trial: its slot of the budget stays
        return _tell(study, trial, TrialState.FAIL, reason=f"{why or result.reason} during epoch {done + 1}")
    return _tell(study, trial, TrialState.FAIL, reason=result.reason or "it ended without a validation accuracy")


def _tell(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None = None,
          reason: str = "") -> str:
    if reason:
        trial.set_user_attr("reason", reason)
    try:
        study.tell(trial, value, state=state) if state == TrialState.COMPLETE else study.tell(trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # another process took this worker for dead and failed the trial meanwhile
        log.warning("trial %d was already marked finished by another process", trial.number)
    return STATE_NAMES[state]


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use the budget: every one started, except those a stop or a dead worker interrupted
    (their hyperparameters were not judged; the sweep runs another trial instead)."""
    return [t for t in trials if t.state != TrialState.WAITING and not t.user_attrs.get("interrupted")]


def claim_trial(study: optuna.Study, spec: SweepSpec, storage: SweepStorage,
                store: RunStore) -> optuna.Trial | None:
    """The next trial of the budget for this worker, or None when the budget is spent or the sweep stopped.
    Counting and creating happen under the claim lock, so parallel workers never run more than the budget."""
    with storage.claim_lock(spec.name):
        fail_dead_trials(study, store)
        if stop_requested(study):
            return None
        if len(counted(study.get_trials(deepcopy=False))) >= spec.budget:
            return None
        trial = study.ask()
        trial.set_user_attr("worker", worker_identity())
        return trial


def work(name: str, storage: SweepStorage, *, data_dir: str | None = None, quit: threading.Event | None = None,
         echo: Callable[[str], None] = log.info, data: Any = None) -> dict[str, int]:
    """Pull and train trials of sweep `name` until its budget is spent, it is stopped, or `quit` is set;
    {state: trials} of what this worker ran. `data` (a Cifar10) skips loading; else the spec's data folder
    (or `data_dir`) is read once for every trial."""
    study, spec = load_sweep(name, storage)
    if data_dir:
        spec.base = spec.base.replace(data_dir=data_dir)
    if data is None:
        data = load_cifar10(spec.base.data_dir)  # DataNotFound/DataFormatError: the CLI says it; no trial taken
    quit = quit or threading.Event()
    store, ran = RunStore(storage.runs_dir), {}
    while not quit.is_set():
        trial = claim_trial(study, spec, storage, store)
        if trial is None:
            break
        state = run_trial(study, trial, spec, data, store, quit, echo)
        ran[state] = ran.get(state, 0) + 1
        frozen = study._storage.get_trial(trial._trial_id)
        outcome = f"validation accuracy {frozen.value:.2f}%" if state == "complete" else frozen.user_attrs.get("reason")
        echo(f"trial {trial.number} {state}: {outcome}")
    with storage.claim_lock(spec.name):
        fail_dead_trials(study, store)
    return ran


def worker_command(name: str, storage: SweepStorage) -> list[str]:
    command = [sys.executable, "-m", "cifar_app.sweep", "work", name, "--runs-dir", str(storage.runs_dir.resolve())]
    return command + (["--storage", storage.url] if storage.url else [])


def launch_workers(name: str, storage: SweepStorage, count: int, gpus: int = 0,
                   terminal: bool = False) -> list[subprocess.Popen]:
    """Start `count` worker processes for sweep `name` on this machine, detached from the caller's session (an
    app restart leaves them training); with GPUs, each sees one of them (CUDA_VISIBLE_DEVICES), round-robin.
    Their output goes to the sweeps folder's logs/ (or, with `terminal`, to this one). A thread reaps each
    when it ends."""
    logs = storage.folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    processes = []
    for i in range(count):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        else:  # workers on one CPU share its cores rather than each spinning on all of them
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
        with open(os.devnull if terminal else logs / f"{name}-{stamp}-{i}.log", "a") as out:
            process = subprocess.Popen(worker_command(name, storage), stdout=None if terminal else out,
                                       stderr=None if terminal else subprocess.STDOUT, env=env,
                                       cwd=Path(__file__).resolve().parents[2], start_new_session=not terminal)
        threading.Thread(target=process.wait, daemon=True, name=f"reap-sweep-worker-{process.pid}").start()
        processes.append(process)
    return processes
