"""The background training job the dashboard drives: one thread, a stop flag, and live state behind a lock.

`JobManager` owns at most one training thread at a time. The thread runs the one training loop
(`cifar_app.engine.loop.train`) and turns its events into plain Python state guarded by a `threading.Lock`;
readers (the dashboard's script runs, one per tab and rerun) call `snapshot()` and get a copy they may keep
and read at leisure while training goes on. Nothing here imports Streamlit: the thread outlives every
script run and must never touch `st.*` (the dashboard keeps one manager per process in `st.cache_resource`).

Every run is saved in the run store as it trains; Stop sets the flag the loop checks once per batch, and
the loop checkpoints what was learned before it returns.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cifar_app.config import ConfigError, TrainConfig
from cifar_app.data.dataset import Cifar10
from cifar_app.data.formats import DataFormatError, DataNotFound, candidate_paths, data_status
from cifar_app.device import DeviceError, pick_device
from cifar_app.store.lineage import RESUME_RUNTIME_FIELDS, branch_epoch, fork_problems
from cifar_app.store.runs import Run, RunStore
from cifar_app.events import BatchEvent, EpochEvent, EvalEvent, Event, History, ResumeEvent, StatusEvent
from cifar_app.engine.loop import train
from cifar_app.engine.reporter import REPORT_INTERVAL_S

log = logging.getLogger(__name__)

# The batch-loss series keeps at most this many points: a long run halves the older points' density rather
# than growing without bound (each snapshot copies the list).
MAX_LOSS_POINTS = 4000
JOIN_TIMEOUT_S = 10.0


class JobBusy(RuntimeError):
    """Start was asked for while a run is training; only one runs at a time."""


class NotResumable(ValueError):
    """Resume was asked for a run that cannot continue (still training, finished, failed, no checkpoint)."""


@dataclass(frozen=True)
class LossPoint:
    """The mean training loss over the batches since the previous report."""

    epoch: int
    batch: int
    batches: int
    loss: float
    lr: float

    @property
    def position(self) -> float:
        """Where in the run this point is, in epochs (2.5 = halfway through epoch 3)."""
        return self.epoch - 1 + self.batch / self.batches


@dataclass
class JobSnapshot(History):
    """A copy of the job's state at one moment; the reader owns it (the lists are copies, the events frozen
    in practice: the engine never changes an event after emitting it)."""

    job_id: int = 0  # 0 = no job was started in this process
    status: str = "idle"  # idle, running, finished, stopped or failed
    reason: str = ""
    message: str = ""  # the latest status line from the loop (loading data, building the model, ...)
    stop_requested: bool = False
    config: TrainConfig | None = None
    run_id: str = ""
    run_name: str = ""
    run_path: str = ""
    origin: str = ""  # "" for a new run, else e.g. "resumed at epoch 3" or "fork of <run> at epoch 2 (best)"
    started_at: float = 0.0  # time.time()
    ended_at: float = 0.0
    seconds: float = 0.0  # training time reported by the loop at the end
    progress: BatchEvent | None = None  # the latest batch report
    evaluating: EvalEvent | None = None  # the evaluation under way at an epoch's end, else None
    epochs: list[EpochEvent] = field(default_factory=list)
    losses: list[LossPoint] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # RunResult.summary_lines() once the run ended

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def ended(self) -> bool:
        return self.status in ("finished", "stopped", "failed")

    @property
    def history(self) -> list[EpochEvent]:
        return self.epochs

    @property
    def total_epochs(self) -> int:
        return self.config.epochs if self.config else 0

    def epoch_rows(self) -> list[dict[str, Any]]:
        return [event.row() for event in self.epochs]

    def loss_rows(self) -> list[dict[str, Any]]:
        return [{"epoch": p.epoch, "batch": p.batch, "position": p.position, "loss": p.loss, "lr": p.lr}
                for p in self.losses]

    def lines(self) -> list[str]:
        """The coursework's per-epoch lines, every epoch so far."""
        return [line for event in self.epochs for line in event.lines()]

    @property
    def elapsed_s(self) -> float:
        if not self.started_at:
            return 0.0
        return (self.ended_at or time.time()) - self.started_at


class _RecordingStore(RunStore):
    """The run store, telling the job which run folder the loop created (the loop only returns it at the end)."""

    def __init__(self, store: RunStore, on_create: Any):
        super().__init__(store.root)
        self._on_create = on_create

    def create(self, config: TrainConfig, record: dict[str, Any], name: str = "") -> Run:
        run = super().create(config, record, name=name)
        self._on_create(run)
        return run


class JobManager:
    """At most one training run at a time, in a daemon thread; safe to call from any thread."""

    def __init__(self, store: RunStore | None = None, report_interval_s: float = REPORT_INTERVAL_S):
        self.store = store if store is not None else RunStore()
        self.report_interval_s = report_interval_s
        self._lock = threading.Lock()
        self._state = JobSnapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading
    def snapshot(self) -> JobSnapshot:
        """A copy of the state, taken under the lock; cheap (a few list copies)."""
        with self._lock:
            return dataclasses.replace(self._state, epochs=list(self._state.epochs),
                                       losses=list(self._state.losses), summary=list(self._state.summary))

    @property
    def running(self) -> bool:
        with self._lock:
            return self._state.running

    # -- control
    def start(self, config: TrainConfig, data: Cifar10 | None = None, *, resume: Run | None = None,
              fork: tuple[Run, str] | None = None) -> int:
        """Check `config` and start training it in the background; returns the job's id.

        `resume=run` continues a stopped or interrupted run from its last checkpoint with the run's own
        hyperparameters (`config` gives only where it runs: data folder, device...). `fork=(run, 'best'|'last')`
        starts a new run from that checkpoint with `config`'s hyperparameters (see `train`).
        Raises JobBusy while another run trains, NotResumable for a run that cannot continue, and ConfigError,
        DeviceError or DataNotFound for what can be known at once (an impossible config, an absent device, no
        data and no download). Everything that goes wrong later ends the job as 'failed' with the reason.
        """
        self._refuse_if_running()
        origin, run_id, run_name = "", "", ""
        if resume is not None:
            problem = resume.resume_problem()
            if problem:
                raise NotResumable(f"{resume.name} cannot be resumed: {problem}")
            saved = resume.config()
            config = saved.replace(**{k: getattr(config, k) for k in RESUME_RUNTIME_FIELDS})
            origin, run_id, run_name = "resumed", resume.id, resume.name
        if fork is not None:
            parent, which = fork
            problems = fork_problems(parent, which, config)
            if problems:
                raise ConfigError(problems)
            origin = f"fork of {parent.name} at epoch {branch_epoch(parent, which)} ({which})"
        config.check()
        pick_device(config.device)
        if data is None and not config.download:
            found, root = data_status(config.data_dir)
            if found is None:
                raise DataNotFound(root, candidate_paths(root) if root.is_dir() else [root])
        with self._lock:
            self._refuse_if_running(locked=True)
            job_id = self._state.job_id + 1
            self._stop = threading.Event()
            self._state = JobSnapshot(job_id=job_id, status="running", config=config, started_at=time.time(),
                                      message="Starting", origin=origin, run_id=run_id, run_name=run_name)
            self._thread = threading.Thread(target=self._run, args=(job_id, config, data, self._stop, resume, fork),
                                            name=f"training-job-{job_id}", daemon=True)
            self._thread.start()
        return job_id

    def stop(self) -> bool:
        """Ask the running job to stop after its current batch; False when nothing runs."""
        with self._lock:
            if not self._state.running:
                return False
            self._state.stop_requested = True
            self._state.message = "Stopping within one batch"
            self._stop.set()
            return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when no job is running afterwards."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def shutdown(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Stop the running job (if any) and wait for its thread."""
        self.stop()
        return self.wait(timeout)

    def _refuse_if_running(self, locked: bool = False) -> None:
        if not locked:
            with self._lock:
                return self._refuse_if_running(locked=True)
        state = self._state
        if state.running:
            where = f"epoch {state.progress.epoch} of {state.progress.epochs}" if state.progress else "starting"
            raise JobBusy(f"a run is already training ({state.run_name or 'new run'}, {where}); stop it or wait "
                          "for it to end before starting another.")

    # -- the thread

    def _update(self, job_id: int, **changes: Any) -> None:
        with self._lock:
            if self._state.job_id == job_id:
                for key, value in changes.items():
                    setattr(self._state, key, value)

    def _on_event(self, job_id: int, event: Event) -> None:
        with self._lock:
            state = self._state
            if state.job_id != job_id:
                return
            if isinstance(event, StatusEvent):
                if not state.stop_requested:
                    state.message = event.message
            elif isinstance(event, BatchEvent):
                state.progress, state.evaluating = event, None
                state.losses.append(LossPoint(event.epoch, event.batch, event.batches, event.loss, event.lr))
                if len(state.losses) > MAX_LOSS_POINTS:
                    state.losses = state.losses[::2]
                if not state.stop_requested:
                    state.message = f"Training epoch {event.epoch} of {event.epochs}"
            elif isinstance(event, EvalEvent):
                state.evaluating = event
                if not state.stop_requested:
                    state.message = f"Evaluating epoch {event.epoch} of {event.epochs} on the {event.split} images"
            elif isinstance(event, EpochEvent):
                state.epochs.append(event)
                state.evaluating = None
            elif isinstance(event, ResumeEvent):
                state.epochs = list(event.history)
                state.origin = f"resumed at epoch {event.epoch + 1}" + (f", batch {event.batch + 1}" if event.batch else "")

    def _run(self, job_id: int, config: TrainConfig, data: Cifar10 | None, stop: threading.Event,
             resume: Run | None = None, fork: tuple[Run, str] | None = None) -> None:
        def on_create(run: Run) -> None:
            self._update(job_id, run_id=run.id, run_name=run.name, run_path=str(run.path))

        store = _RecordingStore(self.store, on_create)
        try:
            result = train(config, data=data, on_event=lambda event: self._on_event(job_id, event), stop=stop,
                           store=store, resume=resume, fork=fork, report_interval_s=self.report_interval_s)
        except (ConfigError, DeviceError, DataNotFound, DataFormatError, ConnectionError) as error:
            self._update(job_id, status="failed", reason=str(error), message="", ended_at=time.time())
            return
        except Exception as error:  # the app must keep working whatever the loop raises
            log.exception("training job %s failed", job_id)
            self._update(job_id, status="failed", reason=f"{type(error).__name__}: {error}", message="",
                         ended_at=time.time())
            return
        with self._lock:
            if self._state.job_id != job_id:
                return
            state = self._state
            # the loop's own history is authoritative (a resumed run would include earlier epochs)
            state.epochs = list(result.history)
            state.status, state.reason = result.status, result.reason
            state.seconds, state.summary = result.seconds, result.summary_lines()
            state.message, state.ended_at = "", time.time()
            if result.run is not None:
                state.run_id, state.run_path = result.run.id, str(result.run.path)
                state.run_name = state.run_name or result.run.id
