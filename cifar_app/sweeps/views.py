"""What the Sweeps page and `sweep show` show of a study: the trials table, the sweep's state and best trial,
importances, learning curves and the CLI's leaderboard. Reads only. A trial's value is its validation accuracy
at its last epoch (the objective), or, while it runs or where it was pruned, at its latest epoch. A trial's time is
what its worker measured (its claim time while it runs), not Optuna's start and end stamps, which whichever
process ended the trial sets: one that failed it from another host, with another clock, too.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cifar_app.sweeps.claims import counted, interrupted, reruns
from cifar_app.sweeps.space import param_column
from cifar_app.sweeps.spec import STATE_NAMES, SweepSpec, stop_requested


def trial_value(trial: FrozenTrial) -> float | None:
    """A trial's validation accuracy at its last epoch (the objective) when it completed, else at its latest."""
    if trial.value is not None:
        return trial.value
    return trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None


def trial_seconds(trial: FrozenTrial) -> float | None:
    """Its training time as its worker measured it; while it runs, since its worker claimed it."""
    if "seconds" in trial.user_attrs:
        return trial.user_attrs["seconds"]
    claimed = (trial.user_attrs.get("worker") or {}).get("claimed")
    return max(0.0, time.time() - claimed) if claimed and trial.state == TrialState.RUNNING else None


def state_name(trial: FrozenTrial) -> str:
    """Its state in a word; a trial a person stopped (the sweep's Stop, its worker told to end) is 'stopped', not
    'failed': it ended with no verdict and runs again."""
    if trial.state == TrialState.FAIL and trial.user_attrs.get("stopped"):
        return "stopped"
    return STATE_NAMES.get(trial.state, trial.state.name.lower())


def trial_reason(trial: FrozenTrial, spec: SweepSpec, again: dict[int, int]) -> str:
    reason = trial.user_attrs.get("reason", "")
    if interrupted(trial) and not reason:  # failed by Optuna's heartbeat, in whichever process looked first
        reason = (f"its worker's heartbeat stopped for over {spec.grace_s} s (the worker was killed, or cut off "
                  "from the database)")
    if trial.number in again:
        reason = f"{reason.removesuffix('; it is run again')}; trial {again[trial.number]} runs it again"
    if trial.state == TrialState.WAITING and "rerun_of" in trial.user_attrs:
        reason = f"queued: runs trial {trial.user_attrs['rerun_of']} again"
    return reason


def trial_rows(study: optuna.Study, spec: SweepSpec) -> list[dict[str, Any]]:
    """One row per trial: number, state, validation accuracy, epochs done/planned, seconds, reason, run, and
    each varied hyperparameter (in its `param_column`)."""
    trials = study.get_trials(deepcopy=False)
    rows, again = [], reruns(trials)
    for t in trials:
        planned = t.params.get("epochs", spec.base.epochs)
        done = t.user_attrs.get("epochs_done", len(t.intermediate_values))
        rows.append({
            "trial": t.number, "state": state_name(t), "val_acc": trial_value(t),
            "epochs": f"{done}/{planned}", "epochs_done": done, "seconds": trial_seconds(t),
            "reason": trial_reason(t, spec, again), "run": t.user_attrs.get("run_id", ""),
            **{param_column(name): t.params.get(name) for name in spec.space.names},
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
        parts = [f"{self.counts[s]} {s}" for s in ("running", "complete", "pruned", "stopped", "failed")
                 if self.counts.get(s)]
        head = {"running": "Running", "stopping": "Stopping", "stopped": "Stopped", "finished": "Finished",
                "waiting": "Waiting for workers"}[self.phase]
        return f"{head}: {self.done} of {self.budget} trials done" + (f" ({', '.join(parts)})" if parts else "")


def sweep_state(study: optuna.Study, spec: SweepSpec) -> SweepState:
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[state_name(t)] = counts.get(state_name(t), 0) + 1
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
    return [{"trial": t.number, "epoch": epoch, "val_acc": value, "state": state_name(t)}
            for t in study.get_trials(deepcopy=False) for epoch, value in sorted(t.intermediate_values.items())]


def leaderboard_lines(study: optuna.Study, spec: SweepSpec, top: int = 20) -> list[str]:
    """The CLI's leaderboard: trials by validation accuracy, the best trial's test accuracy, importances."""
    rows = sorted(trial_rows(study, spec), key=lambda r: (r["state"] != "complete", -(r["val_acc"] or -1)))
    state = sweep_state(study, spec)
    lines = [f"sweep {spec.name}: {state.line()}", *spec.describe(), ""]
    names = spec.space.names
    widths = {n: max([len(n)] + [len(_show(r[param_column(n)])) for r in rows[:top]]) for n in names}
    lines.append(f"{'trial':>5}  {'state':<8} {'final val':>9} {'epochs':>6} {'time':>7}  "
                 + "  ".join(f"{n:>{widths[n]}}" for n in names))
    for row in rows[:top]:
        value = f"{row['val_acc']:.2f}%" if row["val_acc"] is not None else "-"
        params = "  ".join(f"{_show(row[param_column(n)]):>{widths[n]}}" for n in names)
        lines.append(f"{row['trial']:>5}  {row['state']:<8} {value:>9} {row['epochs']:>6} "
                     f"{(row['seconds'] or 0):>6.0f}s  {params}" + (f"   ({row['reason']})" if row["reason"] else ""))
    if len(rows) > top:
        lines.append(f"  ... and {len(rows) - top} more")
    best = state.best
    if best is not None:
        test = best.user_attrs.get("test_acc")
        lines += ["", f"best: trial {best.number}, validation accuracy {best.value:.2f}% at its last epoch, run "
                      f"{best.user_attrs.get('run_id')}",
                  f"its test accuracy: {test:.2f}% (measured once, at that epoch; not used to choose)"
                  if test is not None else ""]
    found, why = importances(study)
    lines += ["", "hyperparameter importances (PED-ANOVA over the complete trials):"]
    lines += [f"  {name:<18} {value:.3f}" for name, value in found.items()] or [f"  {why}"]
    return lines


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)
