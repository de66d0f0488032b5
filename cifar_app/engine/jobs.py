"""The training job the dashboard drives: a training process of its own, watched from the server.

`JobManager` starts at most one run at a time, as a process of its own (engine.launcher: the trainer's command
line), and watches it: a thread reads the run's live event log (store/live.py) a few times a second and turns
its events into plain Python state guarded by a `threading.Lock`; readers (the dashboard's script runs, one per
tab and rerun) call `snapshot()` and get a copy they may keep while training goes on, and `snapshot().version`
says whether anything changed since they last drew. Nothing here imports Streamlit: the thread outlives every
script run and must never touch `st.*` (the dashboard keeps one manager per process in `st.cache_resource`).

Stop sends the training process SIGTERM, which ends the run within one batch after a checkpoint. The process
outlives the server: a new manager (after a restart, or a kill -9 of the server) finds a run the app started
and that still trains, and watches it again from its log, earlier sessions of a resumed run included.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifar_app.config import ConfigError, TrainConfig
from cifar_app.data.formats import DataNotFound, candidate_paths, data_status
from cifar_app.device import pick_device
from cifar_app.engine.launcher import last_line, start_training
from cifar_app.events import BatchEvent, EndEvent, EpochEvent, EvalEvent, Event, History, ResumeEvent, StatusEvent
from cifar_app.engine.memory import check_memory
from cifar_app.store.lineage import RESUME_RUNTIME_FIELDS, branch_epoch, fork_problems
from cifar_app.store.live import LAUNCH_FILE, LIVE_FILE, LOG_FILE, read_events
from cifar_app.store.liveness import process_alive
from cifar_app.store.runs import Run, RunStore

log = logging.getLogger(__name__)

# The batch-loss series keeps at most this many points: a long run halves the older points' density rather
# than growing without bound (each snapshot copies the list).
MAX_LOSS_POINTS = 4000
JOIN_TIMEOUT_S = 10.0
POLL_S = 0.25  # how often the watcher reads the live log: a batch report reaches the page within about this


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

    job_id: int = 0  # 0 = no job was started (or found) by this process
    version: int = 0  # grows with every event the job's state took in: nothing new, nothing to redraw
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
    pid: int = 0  # the training process

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



@dataclass
class _Watch:
    """What the watcher of one job follows: the run folder, the training process, and where in the run's live
    log this session began (the lines before are the run's earlier sessions: history, not news)."""

    job_id: int
    folder: Path
    pid: int
    pid_start: str | None
    launched: float
    process: subprocess.Popen | None = None  # None for a process found again after a restart
    session_offset: int = 0

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return process_alive(self.pid, self.pid_start)


class JobManager:
    """At most one training run at a time, in a process of its own, watched by a daemon thread; safe to call from
    any thread."""

    def __init__(self, store: RunStore | None = None, poll_s: float = POLL_S):
        self.store = store if store is not None else RunStore()
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._state = JobSnapshot()
        self._watch: _Watch | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._adopt()

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
    def start(self, config: TrainConfig, *, resume: Run | None = None, fork: tuple[Run, str] | None = None) -> int:
        """Check `config` and start training it in a process of its own; returns the job's id.

        `resume=run` continues a stopped or interrupted run from its last checkpoint with the run's own
        hyperparameters (`config` gives only where it runs: data folder, device...). `fork=(run, 'best'|'last')`
        starts a new run from that checkpoint with `config`'s hyperparameters (see `train`).
        Raises JobBusy while another run trains, NotResumable for a run that cannot continue, and ConfigError,
        DeviceError or DataNotFound for what can be known at once (an impossible config, an absent device, no
        data and no download). Everything that goes wrong later ends the job as 'failed' with the reason.
        """
        self._refuse_if_running()
        origin, run_name = "", ""
        if resume is not None:
            problem = resume.resume_problem()
            if problem:
                raise NotResumable(f"{resume.name} cannot be resumed: {problem}")
            config = resume.config().replace(**{k: getattr(config, k) for k in RESUME_RUNTIME_FIELDS})
            origin, run_name = "resumed", resume.name
        if fork is not None:
            parent, which = fork
            problems = fork_problems(parent, which, config)
            if problems:
                raise ConfigError(problems)
            origin = f"fork of {parent.name} at epoch {branch_epoch(parent, which)} ({which})"
        config.check()
        too_big = check_memory(config, pick_device(config.device)).problem()  # before a process takes the server's
        if too_big:
            raise ConfigError([too_big])
        if not config.download:
            found, root = data_status(config.data_dir)
            if found is None:
                raise DataNotFound(root, candidate_paths(root) if root.is_dir() else [root])
        with self._lock:
            self._refuse_if_running(locked=True)
            folder = resume.path if resume is not None else self.store.reserve(config.name)
            process, launch = start_training(config, self.store.root, folder.name, resume=resume is not None,
                                             fork=(fork[0].id, fork[1]) if fork else None)
            job_id = self._state.job_id + 1
            self._state = JobSnapshot(job_id=job_id, status="running", config=config, started_at=time.time(),
                                      message="Starting", origin=origin, run_id=folder.name,
                                      run_name=run_name or config.name or folder.name, run_path=str(folder),
                                      pid=process.pid)
            self._follow(_Watch(job_id, folder, process.pid, launch["pid_start"], launch["launched"], process,
                                launch["live_offset"]))
        return job_id

    def stop(self) -> bool:
        """Ask the running job to stop after its current batch; False when nothing runs."""
        with self._lock:
            watch = self._watch
            if not self._state.running or watch is None:
                return False
            self._state.stop_requested = True
            self._state.message = "Stopping within one batch"
            self._state.version += 1
        try:
            if watch.process is not None:
                watch.process.send_signal(signal.SIGTERM)
            elif watch.alive():  # found again after a restart: the pid is checked against its start time
                os.kill(watch.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended meanwhile; the watcher says how
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the job's watcher to see it end; True when no job is running afterwards."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def shutdown(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Stop the running job (if any) and wait for it to end."""
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

    # -- finding a run again after a restart

    def _adopt(self) -> None:
        """Watch the newest run that an app started and whose process still trains (this server restarted)."""
        for folder in sorted(self.store.root.glob(f"*/{LAUNCH_FILE}"), reverse=True) if self.store.root.is_dir() else []:
            try:
                launch = json.loads(folder.read_text())
            except (OSError, ValueError):
                continue
            if not process_alive(int(launch["pid"]), launch.get("pid_start")):
                continue
            run = Run(folder.parent)
            config = run.config() if (run.path / "config.json").is_file() else None
            self._state = JobSnapshot(job_id=1, status="running", config=config, message="Training",
                                      started_at=float(launch.get("launched", time.time())), run_id=run.id,
                                      run_name=run.name, run_path=str(run.path), pid=int(launch["pid"]),
                                      origin="resumed" if launch.get("resume") else "")
            self._follow(_Watch(1, run.path, int(launch["pid"]), launch.get("pid_start"),
                                float(launch.get("launched", 0)), None, int(launch.get("live_offset", 0))))
            return

    # -- the watcher

    def _follow(self, watch: _Watch) -> None:
        self._watch = watch
        self._thread = threading.Thread(target=self._run_watch, args=(watch,), name=f"job-watch-{watch.job_id}",
                                        daemon=True)
        self._thread.start()

    def _run_watch(self, watch: _Watch) -> None:
        """Read the live log as it grows until the training process has ended, then say how it ended."""
        offset, end = 0, None
        try:
            while True:
                alive = watch.alive()  # asked before reading: an end written before exiting is read below
                events, offset = read_events(watch.folder / LIVE_FILE, offset)
                for line_end, _, event in events:
                    news = line_end > watch.session_offset  # lines of earlier sessions only rebuild the history
                    self._on_event(watch.job_id, event, news)
                    if isinstance(event, EndEvent) and news:
                        end = event
                if not alive:
                    break
                self._wake.wait(self.poll_s)
        except Exception as error:  # the watcher must not die silently: the page would show a run forever
            log.exception("watching job %s failed", watch.job_id)
            end = EndEvent("failed", f"the app lost track of the run: {type(error).__name__}: {error}", 0.0)
        self._ended(watch, end)

    def _on_event(self, job_id: int, event: Event, news: bool = True) -> None:
        with self._lock:
            state = self._state
            if state.job_id != job_id:
                return
            state.version += 1
            if isinstance(event, BatchEvent):
                state.losses.append(LossPoint(event.epoch, event.batch, event.batches, event.loss, event.lr))
                if len(state.losses) > MAX_LOSS_POINTS:
                    state.losses = state.losses[::2]
                if news:
                    state.progress, state.evaluating = event, None
                    if not state.stop_requested:
                        state.message = f"Training epoch {event.epoch} of {event.epochs}"
            elif isinstance(event, EpochEvent):
                state.epochs.append(event)
                state.evaluating = None
            elif isinstance(event, ResumeEvent):  # what came after the checkpoint is trained again: forget it
                resumed_at = event.epoch + (event.batch / event.batches if event.batches else 0)
                state.epochs = [e for e in state.epochs if e.epoch <= event.epoch]
                state.losses = [p for p in state.losses if p.position <= resumed_at + 1e-9]
                if news:
                    state.epochs = list(event.history)
                    state.origin = f"resumed at {event.where()}"
            elif not news:
                return
            elif isinstance(event, StatusEvent):
                if not state.stop_requested:
                    state.message = event.message
            elif isinstance(event, EvalEvent):
                state.evaluating = event
                if not state.stop_requested:
                    state.message = f"Evaluating epoch {event.epoch} of {event.epochs} on the {event.split} images"

    def _ended(self, watch: _Watch, end: EndEvent | None) -> None:
        """The training process is gone: its own last word, or what its run folder and log say."""
        if end is None:
            end = self._silent_end(watch)
        with self._lock:
            state = self._state
            if state.job_id == watch.job_id:
                if end.status == "failed" and state.stop_requested and not (watch.folder / "config.json").is_file():
                    end = EndEvent("stopped", "stopped by the user before training began", 0.0)
                state.status, state.reason, state.seconds = end.status, end.reason, end.seconds
                state.summary, state.message, state.ended_at = list(end.summary), "", time.time()
                state.evaluating, state.version = None, state.version + 1
        if not (watch.folder / "config.json").is_file():  # the run never began: nothing of it to keep
            shutil.rmtree(watch.folder, ignore_errors=True)

    def _silent_end(self, watch: _Watch) -> EndEvent:
        """How a process that ended without its end event (killed, crashed before the loop) ended."""
        last = last_line(watch.folder / LOG_FILE)
        if (watch.folder / "config.json").is_file():
            run = Run(watch.folder)
            meta = run.meta()
            if meta.get("status") in ("finished", "stopped", "failed") and meta.get("ended", 0) >= watch.launched:
                return EndEvent(meta["status"], meta.get("reason", ""), float(meta.get("seconds") or 0))
            why = f" ({last})" if last else ""
            return EndEvent("failed", f"the training process ended without finishing{why}; resume continues from the "
                                      "last checkpoint", float(meta.get("seconds") or 0))
        return EndEvent("failed", last.removeprefix("error: ") if last else "the training process ended before "
                                  "the run began", 0.0)
