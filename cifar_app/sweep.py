"""Hyperparameter sweeps on Optuna: a study of many trials, each an ordinary run in the run store, trained by
worker processes that pull trials from a shared storage until the budget is spent.

    spec       SweepSpec: the preset-based config every trial starts from, the search space (search_space.py),
               the budget, the sampler (TPE, random, grid) and the pruner (none, median, Hyperband). It lives in
               the study's user attributes, so any worker on any machine can read it.
    storage    SweepStorage: by default Optuna's journal file in the runs folder (append-only with a lock
               file: made for several processes, even over NFS); `--storage postgresql://...` for many machines.
    worker     `python -m cifar_app.sweep work NAME`: claims a trial under a lock (so two workers never exceed
               the budget), samples its hyperparameters, trains it with `train.train`, reports each epoch's
               validation accuracy to the pruner, and tells Optuna how it ended. A worker whose process died
               leaves its trial `running`; the next claim (or the page) marks it failed, and the sweep goes on.
    stop       a study attribute every worker reads at most every STOP_CHECK_S seconds from its on_event
               callback: the run ends within one batch.
    views      the trials table, the sweep's state, importances and learning curves, for the page and the CLI.

The objective is validation accuracy (a validation split is required); test accuracy is measured, by default,
once at each trial's last epoch and shown for the best trial only. Nothing here imports Streamlit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: the journal's own lock still guards every write
    fcntl = None

import optuna
from optuna.trial import FrozenTrial, TrialState

from cifar_app.config import ConfigError, TrainConfig, default_data_dir, preset
from cifar_app.data import DataFormatError, DataNotFound, data_status, load_cifar10
from cifar_app.device import DeviceError
from cifar_app.events import EpochEvent, Event
from cifar_app.runs import Run, RunStore, default_runs_dir, process_alive, process_start
from cifar_app.search_space import SearchSpace, SpaceError

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "hyperband")
DEFAULT_VAL_SIZE = 5000
STOP_CHECK_S = 1.0  # how often a training worker reads the sweep's stop flag (one storage read)
# A running trial on another host is taken for dead when its run's heartbeat (every few seconds while it
# trains, runs.HEARTBEAT_S) or, before its run exists, its start is this old.
STALE_S = 120.0
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")
STATE_NAMES = {TrialState.RUNNING: "running", TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
               TrialState.FAIL: "failed", TrialState.WAITING: "waiting"}


class SweepError(Exception):
    """Something a user asked of a sweep that cannot be done; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------------------
# Storage


def _masked(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class SweepStorage:
    """Where studies live: a PostgreSQL (or SQLite) URL, or by default Optuna's journal file in the runs
    folder. `open()` connects once per instance; `claim_lock` makes counting and creating a trial atomic."""

    def __init__(self, runs_dir: str | os.PathLike | None = None, url: str | None = None):
        self.runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        self.url = url or os.environ.get("CIFAR_SWEEP_STORAGE") or None
        self._storage: optuna.storages.BaseStorage | None = None
        self._rdb: optuna.storages.RDBStorage | None = None

    @property
    def folder(self) -> Path:
        """The sweeps' own folder in the runs folder: the journal file, the claim lock and worker logs."""
        return self.runs_dir / "sweeps"

    def has_studies(self) -> bool:
        """False when the default journal file does not exist yet (looking for a sweep creates no file)."""
        return self.url is not None or (self.folder / "journal.log").is_file()

    def describe(self) -> str:
        return _masked(self.url) if self.url else f"journal file {self.folder / 'journal.log'}"

    def sqlalchemy_url(self) -> str:
        url = self.url or ""
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):  # psycopg 3 is the driver this project installs
                return "postgresql+psycopg://" + url.removeprefix(prefix)
        if url.startswith(("postgresql+psycopg://", "sqlite:///")):
            return url
        raise SweepError(f"unsupported sweep storage {_masked(url)!r}: give a PostgreSQL URL "
                         "(postgresql://user:password@host:5432/database) for workers on many machines, or leave "
                         "--storage out for the journal file in the runs folder.")

    def open(self) -> optuna.storages.BaseStorage:
        if self._storage is not None:
            return self._storage
        if self.url is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(self.folder / "journal.log"))
            self._storage = optuna.storages.JournalStorage(backend)
            return self._storage
        url = self.sqlalchemy_url()
        connect = {"connect_args": {"connect_timeout": 5}} if url.startswith("postgresql") else {}
        try:
            self._rdb = optuna.storages.RDBStorage(url, engine_kwargs=connect)
        except Exception as error:  # sqlalchemy's OperationalError, a missing driver, a bad URL: all the same
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise SweepError(f"cannot reach the sweep storage {_masked(self.url)}: {first}") from None
        self._storage = self._rdb
        return self._storage

    @contextlib.contextmanager
    def claim_lock(self, name: str) -> Iterator[None]:
        """Held while a worker counts the study's trials and creates the next one, so the budget is never
        exceeded: a file lock beside the journal (or SQLite file), a PostgreSQL advisory lock otherwise."""
        self.open()
        if self._rdb is not None and self.sqlalchemy_url().startswith("postgresql"):
            from sqlalchemy import text

            key = zlib.crc32(f"cifar-sweep:{name}".encode())
            with self._rdb.engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            return
        path = self.folder / "claim.lock" if self.url is None else Path(self.url.removeprefix("sqlite:///") + ".claim")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------------------
# The sweep's specification


@dataclass
class SweepSpec:
    """Everything a worker needs to run a sweep's trials, kept in the study so every worker reads the same."""

    name: str
    base: TrainConfig
    space: SearchSpace
    trials: int = 20
    sampler: str = "tpe"
    pruner: str = "median"
    workers: int = 1  # how many trials run at once on the machine that starts the sweep
    prune_startup: int = 3  # trials that run to the end before the median pruner judges any
    created: float = field(default_factory=time.time)

    @property
    def budget(self) -> int:
        """How many trials the sweep runs: `trials`, or fewer when a grid has fewer points."""
        return min(self.trials, self.space.grid_size()) if self.sampler == "grid" else self.trials

    def max_epochs(self) -> int:
        dims = [d for d in self.space.dimensions if d.name == "epochs"]
        if not dims:
            return self.base.epochs
        dim = dims[0]
        return int(max(dim.choices) if not dim.is_range else dim.high)

    def problems(self) -> list[str]:
        """Why this sweep cannot start, one sentence each; empty when it can."""
        problems = []
        if not NAME_PATTERN.match(self.name):
            problems.append(f"sweep name {self.name!r}: use 1 to 60 letters, digits, '-', '_' or '.', starting with "
                            "a letter or digit.")
        if not 1 <= self.trials <= 10_000:
            problems.append(f"the number of trials must be between 1 and 10000 (got {self.trials}).")
        if not 1 <= self.workers <= 64:
            problems.append(f"workers (trials at once) must be between 1 and 64 (got {self.workers}).")
        if self.sampler not in SAMPLERS:
            problems.append(f"sampler must be one of {', '.join(SAMPLERS)} (got {self.sampler!r}).")
        if self.pruner not in PRUNERS:
            problems.append(f"pruner must be one of {', '.join(PRUNERS)} (got {self.pruner!r}).")
        if self.prune_startup < 0:
            problems.append(f"the pruner's startup trials cannot be negative (got {self.prune_startup}).")
        if self.base.val_size <= 0:
            problems.append(f"a sweep compares trials on validation accuracy: hold out a validation split "
                            f"(val_size above 0; {DEFAULT_VAL_SIZE} is the default).")
        space_problems = self.space.problems(self.base)
        problems += space_problems
        if self.sampler == "grid" and not space_problems:
            problems += self.space.grid_problems()
        return problems

    def check(self) -> "SweepSpec":
        problems = self.problems()
        if problems:
            raise SweepError("The sweep cannot start:\n  - " + "\n  - ".join(problems))
        return self

    @classmethod
    def from_preset(cls, name: str, preset_name: str, space: SearchSpace, *, data_dir: str,
                    val_size: int = DEFAULT_VAL_SIZE, train_subset: int = 0, records: bool = False,
                    settings: dict[str, Any] | None = None, **options: Any) -> "SweepSpec":
        """A sweep whose trials start from a preset, on the same split (`val_size` held out, `train_subset` of
        the rest), with `settings` for every trial. Unless `settings` says otherwise, each trial measures test
        accuracy once, at its end (it chooses nothing), and keeps no per-image record (a few MB a trial)."""
        settings = settings or {}
        base = preset(preset_name, **{"data_dir": str(Path(data_dir).resolve()), "val_size": val_size,
                                      "train_subset": train_subset, "records": records, **settings})
        spec = cls(name, base, space, **options)
        if "eval_every" not in settings:
            spec.base = spec.base.replace(eval_every=max(1, spec.max_epochs()))
        return spec

    def trial_config(self, params: dict[str, Any], number: int) -> TrainConfig:
        return self.base.replace(**params, name=f"{self.name}-t{number}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base.to_dict(), "space": self.space.to_dict(), "trials": self.trials,
                "sampler": self.sampler, "pruner": self.pruner, "workers": self.workers,
                "prune_startup": self.prune_startup, "created": self.created}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SweepSpec":
        return cls(**{**values, "base": TrainConfig.from_dict(values["base"]),
                      "space": SearchSpace.from_dict(values["space"])})

    def describe(self) -> list[str]:
        pruner = {"none": "no pruning", "median": f"median pruner (after {self.prune_startup} full trials)",
                  "hyperband": "Hyperband pruner"}[self.pruner]
        return [f"{self.budget} trials, {self.sampler} sampler, {pruner}, objective: validation accuracy on "
                f"{self.base.val_size:,} held-out images",
                *[f"  {d.describe()}" for d in self.space.dimensions]]


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, except that it leaves ending the sweep to the budget: its own `study.stop()`
    works only inside `study.optimize`, and the workers here ask and tell."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D102 (Optuna's signature)
        pass


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.sampler == "grid":
        return _GridSampler(spec.space.grid(), seed=spec.base.seed)  # the same grid order in every worker
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler()  # unseeded: seeded workers would all draw the same points
    # TPE's first trials are random: a third of the budget, 3 to 10. constant_liar spreads parallel workers.
    startup = max(3, min(10, spec.budget // 3))
    return optuna.samplers.TPESampler(n_startup_trials=startup, constant_liar=True)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.prune_startup, n_warmup_steps=0)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, spec.max_epochs()),
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------------------------------------------------
# Creating, finding and stopping sweeps


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO and warns about experimental features: the CLI and page say it better."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def create_sweep(spec: SweepSpec, storage: SweepStorage) -> optuna.Study:
    """Check the spec, the data and the storage, then create the study. Raises SweepError before anything is
    written when any of them is wrong, or when a sweep of that name exists."""
    spec.check()
    found, root = data_status(spec.base.data_dir)
    if found is None:
        raise SweepError(f"no CIFAR-10 under {root}: point --data-dir (or the sidebar's data folder) at a copy.")
    quiet_optuna()
    backend = storage.open()
    try:
        study = optuna.create_study(study_name=spec.name, storage=backend, direction="maximize",
                                    sampler=make_sampler(spec), pruner=make_pruner(spec))
    except optuna.exceptions.DuplicatedStudyError:
        raise SweepError(f"a sweep named {spec.name!r} already exists in {storage.describe()}: choose another "
                         f"name, or add workers to it with `python -m cifar_app.sweep work {spec.name}`.") from None
    study.set_user_attr("spec", spec.to_dict())
    study.set_user_attr("stop", False)
    return study


def load_sweep(name: str, storage: SweepStorage) -> tuple[optuna.Study, SweepSpec]:
    """The study and its spec, with the spec's sampler and pruner."""
    if not storage.has_studies():
        raise SweepError(f"no sweep named {name!r} in {storage.describe()}.")
    quiet_optuna()
    backend = storage.open()
    try:
        study_id = backend.get_study_id_from_name(name)
    except KeyError:
        raise SweepError(f"no sweep named {name!r} in {storage.describe()}.") from None
    attrs = backend.get_study_user_attrs(study_id)
    if "spec" not in attrs:
        raise SweepError(f"study {name!r} in {storage.describe()} was not made by this app (it has no sweep spec).")
    spec = SweepSpec.from_dict(attrs["spec"])
    study = optuna.load_study(study_name=name, storage=backend, sampler=make_sampler(spec), pruner=make_pruner(spec))
    return study, spec


def list_sweeps(storage: SweepStorage) -> list[str]:
    """The names of this app's sweeps in the storage, newest first."""
    if not storage.has_studies():
        return []
    quiet_optuna()
    studies = [s for s in storage.open().get_all_studies() if "spec" in s.user_attrs]
    return [s.study_name for s in sorted(studies, key=lambda s: s.user_attrs["spec"].get("created", 0), reverse=True)]


def stop_requested(study: optuna.Study) -> bool:
    return bool(study._storage.get_study_user_attrs(study._study_id).get("stop"))


def request_stop(study: optuna.Study, stop: bool = True) -> None:
    """Ask every worker to end its trial within one batch and take no more (or, with stop=False, to go on)."""
    study.set_user_attr("stop", stop)


# ---------------------------------------------------------------------------------------------------------
# Workers: liveness


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid)}


def _age(moment: dt.datetime | None) -> float:
    return time.time() - moment.timestamp() if moment else 0.0


def dead_reason(trial: FrozenTrial, store: RunStore) -> str | None:
    """Why a `running` trial's worker is taken for dead, or None while it may be alive. On this host the
    worker's pid says it; elsewhere the run's heartbeat (or, before the run exists, the trial's start) going
    quiet for STALE_S seconds."""
    worker, run_id = trial.user_attrs.get("worker") or {}, trial.user_attrs.get("run_id")
    run = Run(store.root / run_id) if run_id and (store.root / run_id / "meta.json").is_file() else None
    done = len(trial.intermediate_values)
    where = f" during epoch {done + 1}" + (f"; its run {run_id} keeps what it learned (Runs page: resume or fork)"
                                           if run else "")
    if worker.get("host") == socket.gethostname():
        alive = process_alive(int(worker["pid"]), worker.get("pid_start"))
        return None if alive else f"its worker (pid {worker['pid']}) died{where}"
    beat = run.meta().get("heartbeat") if run else None
    quiet = time.time() - float(beat) if beat else _age(trial.datetime_start)
    if quiet < STALE_S:
        return None
    return f"its worker ({worker.get('host', 'unknown host')}, pid {worker.get('pid', '?')}) went quiet " \
           f"{quiet:.0f} s ago{where}"


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


# ---------------------------------------------------------------------------------------------------------
# Workers: one trial


class TrialRunStore(RunStore):
    """The run store, writing the sweep and trial into each new run's config record (and the run's id into
    the trial), so the Runs page can name a trial's sweep and the Sweeps page open a trial's run."""

    def __init__(self, root: Path, sweep: str, trial: optuna.Trial):
        super().__init__(root)
        self.sweep, self.trial = sweep, trial
        self.run: Run | None = None

    def create(self, config: TrainConfig, record: dict[str, Any], name: str = "") -> Run:
        self.run = super().create(config, {**record, "sweep": self.sweep, "trial": self.trial.number}, name)
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
    from cifar_app.train import train  # torch: only where a trial trains

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


# ---------------------------------------------------------------------------------------------------------
# Workers: the loop


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
                                       cwd=Path(__file__).resolve().parent.parent, start_new_session=not terminal)
        threading.Thread(target=process.wait, daemon=True, name=f"reap-sweep-worker-{process.pid}").start()
        processes.append(process)
    return processes


# ---------------------------------------------------------------------------------------------------------
# Views: what the page and the CLI show


def trial_value(trial: FrozenTrial) -> float | None:
    """A trial's validation accuracy: the objective when it completed, else its best epoch so far."""
    if trial.value is not None:
        return trial.value
    return max(trial.intermediate_values.values()) if trial.intermediate_values else None


def trial_seconds(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None:
        return None
    end = trial.datetime_complete or dt.datetime.now()
    return max(0.0, (end - trial.datetime_start).total_seconds())


def trial_rows(study: optuna.Study, spec: SweepSpec) -> list[dict[str, Any]]:
    """One row per trial: number, state, validation accuracy, epochs done/planned, seconds, reason, run, and
    each varied hyperparameter."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        planned = t.params.get("epochs", spec.base.epochs)
        done = t.user_attrs.get("epochs_done", len(t.intermediate_values))
        rows.append({
            "trial": t.number, "state": STATE_NAMES.get(t.state, t.state.name.lower()), "val_acc": trial_value(t),
            "epochs": f"{done}/{planned}", "epochs_done": done, "seconds": trial_seconds(t),
            "reason": t.user_attrs.get("reason", ""), "run": t.user_attrs.get("run_id", ""),
            **{name: t.params.get(name) for name in spec.space.names},
        })
    return rows


@dataclass
class SweepState:
    """Where a sweep is: its phase, the trials done of its budget, how many are in each state, its best trial."""

    phase: str  # running, stopping, stopped, finished, waiting (budget left, no trial running)
    budget: int
    done: int  # finished trials that use the budget (an interrupted one does not)
    counts: dict[str, int]
    best: FrozenTrial | None

    def line(self) -> str:
        parts = [f"{self.counts[s]} {s}" for s in ("running", "complete", "pruned", "failed") if self.counts.get(s)]
        head = {"running": "Running", "stopping": "Stopping", "stopped": "Stopped", "finished": "Finished",
                "waiting": "Waiting for workers"}[self.phase]
        return f"{head}: {self.done} of {self.budget} trials done" + (f" ({', '.join(parts)})" if parts else "")


def sweep_state(study: optuna.Study, spec: SweepSpec) -> SweepState:
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[STATE_NAMES[t.state]] = counts.get(STATE_NAMES[t.state], 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    done = len([t for t in counted(trials) if t.state.is_finished()])
    running = counts.get("running", 0)
    if stop_requested(study):
        phase = "stopping" if running else "stopped"
    elif running:
        phase = "running"
    else:
        phase = "finished" if done >= spec.budget else "waiting"
    return SweepState(phase, spec.budget, done, counts, best)


def importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """({hyperparameter: importance}, "") from Optuna's default evaluator (PED-ANOVA) over the complete trials,
    or ({}, why not yet)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 3:
        return {}, f"importances need at least 3 complete trials ({len(complete)} so far)."
    varied = sorted({name for t in complete for name in t.params
                     if len({repr(u.params.get(name)) for u in complete}) > 1})
    if not varied:
        return {}, "every complete trial has the same hyperparameters so far."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA warns on small studies; the caption says how many
            found = optuna.importance.get_param_importances(study, params=varied)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return {}, f"importances could not be computed yet ({error})."
    return {name: float(v) for name, v in found.items() if math.isfinite(v)}, ""


def learning_curves(study: optuna.Study) -> list[dict[str, Any]]:
    """Long form: one row per (trial, epoch) of validation accuracy, with the trial's state."""
    return [{"trial": t.number, "epoch": epoch, "val_acc": value, "state": STATE_NAMES.get(t.state, "")}
            for t in study.get_trials(deepcopy=False) for epoch, value in sorted(t.intermediate_values.items())]


def leaderboard_lines(study: optuna.Study, spec: SweepSpec, top: int = 20) -> list[str]:
    """The CLI's leaderboard: trials by validation accuracy, the best trial's test accuracy, importances."""
    rows = sorted(trial_rows(study, spec), key=lambda r: (r["state"] != "complete", -(r["val_acc"] or -1)))
    state = sweep_state(study, spec)
    lines = [f"sweep {spec.name}: {state.line()}", *spec.describe(), ""]
    names = spec.space.names
    widths = {n: max([len(n)] + [len(_show(r[n])) for r in rows[:top]]) for n in names}
    lines.append(f"{'trial':>5}  {'state':<8} {'val acc':>8} {'epochs':>6} {'time':>7}  "
                 + "  ".join(f"{n:>{widths[n]}}" for n in names))
    for row in rows[:top]:
        value = f"{row['val_acc']:.2f}%" if row["val_acc"] is not None else "-"
        params = "  ".join(f"{_show(row[n]):>{widths[n]}}" for n in names)
        lines.append(f"{row['trial']:>5}  {row['state']:<8} {value:>8} {row['epochs']:>6} "
                     f"{(row['seconds'] or 0):>6.0f}s  {params}" + (f"   ({row['reason']})" if row["reason"] else ""))
    if len(rows) > top:
        lines.append(f"  ... and {len(rows) - top} more")
    best = state.best
    if best is not None:
        test = best.user_attrs.get("test_acc")
        lines += ["", f"best: trial {best.number}, validation accuracy {best.value:.2f}%, run {best.user_attrs.get('run_id')}",
                  f"its test accuracy: {test:.2f}% (measured once; not used to choose)" if test is not None else ""]
    found, why = importances(study)
    lines += ["", "hyperparameter importances (PED-ANOVA over the complete trials):"]
    lines += [f"  {name:<18} {value:.3f}" for name, value in found.items()] or [f"  {why}"]
    return lines


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


# ---------------------------------------------------------------------------------------------------------
# The CLI


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """`--set name=value` pairs as typed config values."""
    from cifar_app.search_space import FIELD_TYPES, parse_value

    values = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in FIELD_TYPES:
            raise SweepError(f"--set {setting!r}: write name=value with a training option's name (e.g. epochs=5).")
        try:
            values[name] = parse_value(name, text)
        except ValueError as error:
            raise SweepError(f"--set {setting!r}: {error}") from None
    return values


def spec_from_args(args: Any) -> SweepSpec:
    """The sweep the create options describe: a preset, the split, --set overrides and the search space."""
    try:
        space = SearchSpace.from_file(args.space) if args.space else SearchSpace(())
        space = SearchSpace(space.dimensions + SearchSpace.from_flags(args.vary or []).dimensions)
    except SpaceError as error:
        raise SweepError(str(error)) from None
    return SweepSpec.from_preset(
        args.name, args.preset, space, data_dir=args.data_dir or default_data_dir(), val_size=args.val_size,
        train_subset=args.train_subset, records=args.records, settings=parse_settings(args.set or []),
        trials=args.trials, sampler=args.sampler, pruner=args.pruner, workers=args.workers or 1,
        prune_startup=args.prune_startup)


def build_parser() -> "argparse.ArgumentParser":
    import argparse

    from cifar_app.config import PRESETS

    parser = argparse.ArgumentParser(
        prog="python -m cifar_app.sweep",
        description="Hyperparameter sweeps on Optuna: create a sweep, run workers (here or on many machines), "
                    "read the leaderboard.")
    commands = parser.add_subparsers(dest="command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--storage", default=None,
                        help="a PostgreSQL URL shared by every machine (default $CIFAR_SWEEP_STORAGE, else a journal "
                             "file in the runs folder)")
    shared.add_argument("--runs-dir", default=None,
                        help="the run store every trial is saved in; on many machines a folder all of them reach "
                             "(default $CIFAR_RUNS_DIR or ./runs)")
    create = argparse.ArgumentParser(add_help=False)
    create.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="what every trial starts from")
    create.add_argument("--vary", action="append", metavar="NAME=SPEC",
                        help="a hyperparameter to search: lr=1e-4:1e-2:log, width=8:32:step=8, batch_size=64,128,256 "
                             "(repeat the flag)")
    create.add_argument("--space", metavar="FILE", help='a JSON or TOML file: {"lr": {"low": 1e-4, "high": 1e-2, '
                                                        '"log": true}, "batch_size": [64, 128]}')
    create.add_argument("--trials", type=int, default=20, help="the budget: trials in all, over every worker")
    create.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="grid needs a finite space")
    create.add_argument("--pruner", choices=PRUNERS, default="median",
                        help="stop poor trials early on their per-epoch validation accuracy")
    create.add_argument("--prune-startup", type=int, default=3,
                        help="trials that run to the end before the median pruner judges any")
    create.add_argument("--workers", type=int, default=None,
                        help="trials at once on this machine (default: one per GPU, else 1)")
    create.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE, help="held-out images: the objective")
    create.add_argument("--train-subset", type=int, default=0, help="train each trial on N images (0 = all)")
    create.add_argument("--data-dir", default=None, help="where CIFAR-10 is (default $CIFAR_DATA_DIR or ./data)")
    create.add_argument("--records", action=argparse.BooleanOptionalAction, default=False,
                        help="keep each trial's per-image record (Dynamics page; a few MB per trial)")
    create.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="any other training option for every trial, e.g. epochs=5 (repeat the flag)")
    for name, parents, text in [
        ("create", [shared, create], "create a sweep (nothing trains yet)"),
        ("run", [shared, create], "create the sweep (with --vary or --space; without, join the existing one), "
                                  "start --workers here, wait, print the leaderboard"),
        ("work", [shared], "one worker: train the sweep's trials until its budget is spent (start one per GPU)"),
        ("show", [shared], "the leaderboard and the hyperparameter importances"),
        ("stop", [shared], "stop every worker of the sweep within one batch"),
        ("list", [shared], "the sweeps in the storage"),
    ]:
        command = commands.add_parser(name, parents=parents, help=text, description=text)
        if name != "list":
            command.add_argument("name", help="the sweep's name")
        if name == "work":
            command.add_argument("--data-dir", default=None, help="where CIFAR-10 is on this machine (default: "
                                                                  "the folder the sweep was created with)")
    return parser


def gpu_count() -> int:
    """CUDA GPUs on this machine: one worker each."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _run_workers(name: str, storage: SweepStorage, count: int) -> int:
    """Start `count` workers here and wait for them. Ctrl-C reaches them too: each ends its trial within a batch."""
    gpus = gpu_count()
    processes = launch_workers(name, storage, count, gpus, terminal=True)
    print(f"started {count} worker(s) {'one per GPU' if gpus else 'on the CPU'}", flush=True)
    while True:
        try:
            for process in processes:
                process.wait()
            return 0
        except KeyboardInterrupt:
            print(f"\nthe workers here end their trials within one batch; the sweep stays open (`work {name}` goes "
                  f"on with it, `stop {name}` stops its workers everywhere)", flush=True)


def _work(args: Any, storage: SweepStorage) -> int:
    quit = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # kill -TERM or Ctrl-C: the trial ends as failed within a batch
        signal.signal(sig, lambda *_: quit.set())
    ran = work(args.name, storage, data_dir=args.data_dir, quit=quit, echo=lambda line: print(line, flush=True))
    print(f"worker done: {', '.join(f'{n} {s}' for s, n in ran.items()) or 'no trial left to run'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The sweep CLI; the exit status is 0 when the command did what it says, 1 when it was refused."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    storage = SweepStorage(args.runs_dir, args.storage)
    try:
        if args.command in ("create", "run"):
            if args.command == "create" or args.vary or args.space:
                study = create_sweep(spec_from_args(args), storage)
                spec = SweepSpec.from_dict(study.user_attrs["spec"])
                print(f"created sweep {spec.name} in {storage.describe()}", *spec.describe(), sep="\n")
            if args.command == "run":
                spec = load_sweep(args.name, storage)[1]
                _run_workers(args.name, storage, args.workers or gpu_count() or spec.workers)
                print("\n".join(leaderboard_lines(*load_sweep(args.name, storage))))
        elif args.command == "work":
            return _work(args, storage)
        elif args.command == "show":
            print("\n".join(leaderboard_lines(*load_sweep(args.name, storage))))
        elif args.command == "stop":
            request_stop(load_sweep(args.name, storage)[0])
            print(f"asked the workers of {args.name} to stop; each ends its trial within one batch")
        else:
            names = list_sweeps(storage)
            print("\n".join(names) if names else f"no sweeps in {storage.describe()}")
    except (SweepError, DataNotFound, DataFormatError, ConfigError) as error:
        print(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
