"""A sweep's trials as a budget: which trials use it, claiming the next one, judging whose worker is dead, and
re-running a trial that was interrupted (stopped, its worker killed or cut off) with the same hyperparameters.

Liveness, by storage:
  database  Optuna's trial heartbeat. A worker beats every `heartbeat_s` seconds from a thread of its own
            (`Heartbeat`); a trial silent for `grace_s` seconds on the database's clock is failed by whoever looks
            next (a claim, the page, `sweep show`) with `optuna.storages.fail_stale_trials`. No shared folder and
            no host's clock or time zone takes part.
  journal   one machine (or hosts sharing its runs folder): the store's one rule (store.liveness) on the worker's
            host, pid and its run's heartbeat, or before the run exists the time it claimed the trial (both
            time.time() of the worker's host). A trial it cannot judge (another host, nothing heard) stays running.
A claim that was cut off half way (its process killed inside the claim lock) leaves a running trial without its
worker's name: the next holder of the lock fails it. Everything that fails or re-queues a trial holds the lock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cifar_app.store.liveness import dead_reason as process_dead_reason, process_start
from cifar_app.store.runs import Run, RunStore
from cifar_app.sweeps.spec import SweepSpec, stop_requested
from cifar_app.sweeps.storage import SweepStorage, is_storage_error

log = logging.getLogger(__name__)
MAX_RERUNS = 2  # an interrupted trial is run again at most twice; interrupted a third time, it uses its slot


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid), "claimed": time.time()}


def interrupted(trial: FrozenTrial) -> bool:
    """Ended with no verdict on its hyperparameters: stopped, or its worker killed or cut off. A trial its own
    worker failed carries the reason; one failed by Optuna's heartbeat (in another process) carries none."""
    return trial.state == TrialState.FAIL and bool(trial.user_attrs.get("interrupted")
                                                   or "reason" not in trial.user_attrs)


def reruns(trials: list[FrozenTrial]) -> dict[int, int]:
    """{trial number: the number of the trial that runs it again}."""
    return {t.user_attrs["rerun_of"]: t.number for t in trials if "rerun_of" in t.user_attrs}


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use the budget: every one claimed, except an interrupted one that is run again (its re-run
    uses the slot instead)."""
    again = reruns(trials)
    return [t for t in trials if t.state != TrialState.WAITING and t.number not in again]


def _depth(trial: FrozenTrial, by_number: dict[int, FrozenTrial]) -> int:
    depth = 0
    while trial.user_attrs.get("rerun_of") in by_number:
        trial, depth = by_number[trial.user_attrs["rerun_of"]], depth + 1
    return depth


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Queue a re-run (same hyperparameters, a new run) of each interrupted trial that has none yet, up to
    MAX_RERUNS deep: a grid point is trained, not skipped or repeated. The numbers re-queued."""
    trials = study.get_trials(deepcopy=False)
    by_number, again, queued = {t.number: t for t in trials}, reruns(trials), []
    for trial in trials:
        if interrupted(trial) and trial.number not in again and _depth(trial, by_number) < MAX_RERUNS:
            study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
            queued.append(trial.number)
    return queued


def dead_reason(trial: FrozenTrial, store: RunStore) -> str | None:
    """Why a `running` trial's worker is taken for dead on the journal, or None while it may be alive (or cannot
    be judged): the store's one liveness rule (store.liveness) on the worker's host and pid and its run's heartbeat,
    or, before its run exists, the time the worker claimed it."""
    worker, run_id = trial.user_attrs.get("worker") or {}, trial.user_attrs.get("run_id")
    run = Run(store.root / run_id) if run_id and (store.root / run_id / "meta.json").is_file() else None
    beat = (run.meta().get("heartbeat") if run else None) or worker.get("claimed")
    why = process_dead_reason(worker.get("host"), worker.get("pid"), worker.get("pid_start"), beat)
    if why is None:
        return None
    where = f" during epoch {len(trial.intermediate_values) + 1}" + (
        f"; its run {run_id} keeps what it learned (Runs page: resume or fork)" if run else "")
    return f"its worker {why.removeprefix('its process ')}{where}"


def _fail(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    try:
        study._storage.set_trial_user_attr(trial._trial_id, "reason", reason)
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another process marked it (or its worker finished it) first
    log.warning("trial %d failed: %s", trial.number, reason)
    return True


def fail_dead_trials(study: optuna.Study, storage: SweepStorage) -> list[int]:
    """Fail the running trials whose worker is dead (database: silent past the grace period; journal: the store's
    rule) and the claims cut off half way, and queue a re-run of each interrupted trial; the numbers failed.
    Call it under the claim lock."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    failed = [t.number for t in running if "worker" not in t.user_attrs
              and _fail(study, t, "its worker was cut off while claiming it")]
    if storage.is_database:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        now = {t.number: t.state for t in study.get_trials(deepcopy=False)}
        failed += [t.number for t in running if now.get(t.number) == TrialState.FAIL and t.number not in failed]
    else:
        store = RunStore(storage.runs_dir)
        for trial in running:
            reason = dead_reason(trial, store) if trial.number not in failed else None
            if reason is not None and _fail(study, trial, reason):
                failed.append(trial.number)
    requeue_interrupted(study)
    return failed


def look_after(study: optuna.Study, storage: SweepStorage) -> list[int]:
    """What a viewer (the page, `sweep show`) does before it reads a sweep: `fail_dead_trials` under the lock."""
    with storage.reachable(), storage.claim_lock(study.study_name):
        return fail_dead_trials(study, storage)


def claim_trial(study: optuna.Study, spec: SweepSpec, storage: SweepStorage) -> tuple[optuna.Trial, dict] | None:
    """The next trial of the budget for this worker with its hyperparameters, or None when the budget is spent or
    the sweep stopped. Counting, creating, the first heartbeat, sampling and naming its worker all happen under the
    claim lock, so parallel workers never run more than the budget and a cut-off claim is recognised."""
    with storage.claim_lock(spec.name):
        fail_dead_trials(study, storage)
        if stop_requested(study) or len(counted(study.get_trials(deepcopy=False))) >= spec.budget:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize": ours beats
            trial = study.ask()
        if storage.is_database:
            study._storage.record_heartbeat(trial._trial_id)
        params = spec.space.suggest(trial)
        trial.set_user_attr("worker", worker_identity())  # last: a trial without it is a cut-off claim
        return trial, params


class Heartbeat:
    """A worker's heartbeat for its trial on a database storage: a thread of its own, so that a long step, a
    compile or an evaluation never silences it. A beat that cannot reach the database is tried at the next one;
    if the database stays away past the grace period, another process fails the trial and the worker hears it."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval_s: float):
        self.storage, self.trial_id, self.interval_s = study._storage, trial._trial_id, interval_s
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"sweep-heartbeat-{trial.number}")

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join(timeout=10)

    def _beat(self) -> None:
        missed = 0
        while not self.done.wait(self.interval_s):
            try:
                self.storage.record_heartbeat(self.trial_id)
                missed = 0
            except Exception as error:  # the thread must outlive an outage: the next beat tries again
                if not is_storage_error(error):
                    log.exception("the trial heartbeat failed")
                elif missed == 0:
                    log.warning("a trial heartbeat could not reach the database; trying again every %g s",
                                self.interval_s)
                missed += 1
