"""A run held to a time budget (`--time-budget 5m`, "Train for N minutes" on the Train page): how many optimiser
steps fit, and a learning-rate schedule that keeps to the budget while this machine's pace moves.

Plan. Before the first step, the speed probe (engine/speed.py: a few synthetic batches through a run's own
TrainingStep) gives the training pace; with the time the set-up already took and the cost of an epoch's end (its
evaluation at EVAL_COST of a training image per image, and the checkpoint), `steps_that_fit` finds the most steps
that end within the budget. The epochs are those steps rounded up, the last one partial; the warm-up and the
attention anneal keep the share of the run that the config gave them. A budget that does not fit one epoch is
refused with a sentence that says what would.

Steer. A probe of a few batches is not the run's pace, and on a shared machine the pace moves while a run trains
(docs/performance.md measures both). `BudgetSchedule` reads the clock at each step and every REPLAN_S seconds plans
again from the pace of the last PACE_WINDOW_S seconds of training and the measured cost of the epoch ends. The
total follows, and with it the epochs (the run's config says how many, so the live view, the ETAs and the run
store follow too). The learning rate is a function of the run's progress, which moves on continuously through
each new plan and reaches the schedule's end (one-cycle's zero) exactly at the last planned step.

A resumed run finishes the plan its checkpoint holds (the budget's clock belonged to the session that stopped); a
fork plans its own steps from its branch point.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from cifar_app.atomic import atomic_write_json
from cifar_app.config import ConfigError, TrainConfig
from cifar_app.engine.schedule import EVAL_COST, eval_images, lr_factor
from cifar_app.engine.speed import measure_images_per_s
from cifar_app.events import Event, StatusEvent
from cifar_app.store.lineage import branch_epoch
from cifar_app.store.runs import Run

if TYPE_CHECKING:  # the loop's record of what a run trains on
    from cifar_app.engine.setup import Setup

REPLAN_S = 2.0  # how often a budgeted run plans again from its pace (a short budget: 50 times in all)
PACE_WINDOW_S = 20.0  # the pace a re-plan uses: the last this-many seconds of training steps
EPOCH_END_FIXED_S = 0.1  # an epoch end's checkpoint, record and metrics row, until one is measured
PROBE_BATCHES = 3


class BudgetTooSmall(ConfigError):
    """The time budget cannot hold one epoch (or was spent before training could start)."""

    def __init__(self, message: str):
        super().__init__([message])
        self.args = (message[0].upper() + message[1:],)  # one sentence, not a list of a configuration's problems


def duration_text(seconds: float) -> str:
    """'45 s', '4 min 30 s', '1 h 5 min': budgets and times in sentences."""
    if seconds < 1:
        return f"{max(0.0, seconds):.2g} s"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def steps_that_fit(seconds: float, step_s: float, epoch_end_s: float, steps_per_epoch: int,
                   done_in_epoch: int = 0) -> int:
    """The most further optimiser steps, from `done_in_epoch` steps into an epoch, whose training (`step_s` each)
    and epoch ends (`epoch_end_s` after each epoch's last step, the run's last step included) end within
    `seconds`. 0 when not even one does. A last, partial epoch is planned only where its steps take longer
    than the evaluation it adds (else the run ends a little early rather than evaluate for a few steps)."""
    step_s, spe = max(step_s, 1e-9), max(steps_per_epoch, 1)
    first = spe - done_in_epoch  # the steps that finish the epoch under way
    if seconds < first * step_s + epoch_end_s:  # the run ends inside this epoch
        return max(0, min(first, int((seconds - epoch_end_s) / step_s)))
    left = seconds - (first * step_s + epoch_end_s)
    full = int(left / (spe * step_s + epoch_end_s))  # further whole epochs, each with its end
    left -= full * (spe * step_s + epoch_end_s)
    partial = max(0, min(spe - 1, int((left - epoch_end_s) / step_s)))  # and a last, partial one, if it is
    if partial * step_s < epoch_end_s:  # worth its evaluation: more training than testing
        partial = 0
    return first + full * spe + partial


@dataclass
class Budget:
    """A run's time budget and its plan, as its checkpoint and meta.json keep them (`state`).

    The learning rate is read at the run's progress `p` on the first plan's scale (`reference` steps, `warmup` of
    them rising): p moves linearly from (`anchor_step`, `anchor_progress`), the last re-plan, to 1 at `total`."""

    seconds: float
    steps_per_epoch: int
    total: int
    warmup: float
    reference: int
    anchor_step: int = 0
    anchor_progress: float = 0.0
    probe_images_per_s: float = 0.0
    setup_s: float = 0.0
    replans: int = 0
    deadline: float | None = field(default=None, compare=False)  # monotonic clock; None: keep the plan as it is

    def state(self) -> dict[str, Any]:
        state = asdict(self)
        state.pop("deadline")
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Budget":
        return cls(**{k: v for k, v in state.items() if k in cls.__dataclass_fields__ and k != "deadline"})

    def progress(self, step: int) -> float:
        rate = (1.0 - self.anchor_progress) / max(1, self.total - self.anchor_step)
        return min(1.0, self.anchor_progress + (step - self.anchor_step) * rate)

    def epochs(self, start_epoch: int = 0) -> int:
        return start_epoch + math.ceil(self.total / self.steps_per_epoch)


def plan(config: TrainConfig, steps_per_epoch: int, images_per_s: float, seconds_left: float,
         test_images: int, setup_s: float = 0.0) -> Budget:
    """The first plan of a run with `config.time_budget`: the most steps that fit in `seconds_left` at the probe's
    pace, with each epoch's evaluation at EVAL_COST of a training image per image. BudgetTooSmall when not one
    epoch fits."""
    step_s = config.batch_size / max(images_per_s, 1e-9)
    end_s = eval_images(config, test_images) * EVAL_COST * step_s / config.batch_size + EPOCH_END_FIXED_S
    total = steps_that_fit(seconds_left, step_s, end_s, steps_per_epoch)
    if total < steps_per_epoch:
        raise BudgetTooSmall(too_small(config.time_budget, setup_s, images_per_s, steps_per_epoch * step_s + end_s,
                                       total / steps_per_epoch))
    share = min(config.warmup_epochs / config.epochs, 0.5) if config.epochs else 0.0
    return Budget(config.time_budget, steps_per_epoch, total, warmup=share * total, reference=total,
                  probe_images_per_s=images_per_s, setup_s=setup_s)


def too_small(budget_s: float, setup_s: float, images_per_s: float, epoch_s: float, fits: float) -> str:
    need = setup_s + epoch_s * 1.1
    nice = math.ceil(need / 60) * 60 if need > 90 else math.ceil(need / 10) * 10
    what = (f"was spent before training could start: loading the data and measuring this machine's pace took "
            f"{duration_text(setup_s)}" if fits <= 0 and setup_s >= budget_s else
            f"fits {max(fits, 0):.1f} of an epoch of this model here ({images_per_s:,.0f} training images/s measured; "
            f"an epoch with its evaluation takes about {duration_text(epoch_s)}, after {duration_text(setup_s)} of "
            "set-up)")
    return (f"a time budget of {duration_text(budget_s)} {what}. Give it at least {duration_text(nice)} "
            f"(--time-budget {duration_text(nice).replace(' ', '')}), or train on fewer images or a smaller network.")


def fitted(config: TrainConfig, budget: Budget, start_epoch: int = 0) -> TrainConfig:
    """`config` with the epochs its budget's plan fills, the warm-up and the attention anneal kept to their share."""
    scale = budget.total / budget.steps_per_epoch / config.epochs  # the fitted run's length over the config's
    anneal = max(1, round(config.attn_anneal_epochs * scale)) if config.attn_anneal_epochs else 0
    warmup = round(budget.warmup / budget.steps_per_epoch, 4)
    return config.replace(epochs=budget.epochs(start_epoch), warmup_epochs=warmup, attn_anneal_epochs=anneal)


def estimate(config: TrainConfig, images_per_s: float, train_images: int, test_images: int,
             setup_s: float = 5.0) -> float | str:
    """Epochs that `config.time_budget` fits at `images_per_s` after about `setup_s` of set-up (the Train page's
    forecast; a run measures again at its start), or why it fits none, as a sentence."""
    steps_per_epoch = max(1, train_images // config.batch_size)
    try:
        budget = plan(config, steps_per_epoch, images_per_s, config.time_budget - setup_s, test_images, setup_s)
    except BudgetTooSmall as error:
        return error.problems[0]
    return budget.total / steps_per_epoch


class BudgetSchedule:
    """The learning rate of every step of a budgeted run, and how many batches each of its epochs trains; with a
    deadline, it plans again every REPLAN_S seconds from the pace it clocks (see the module's docstring).

    It keeps `config.epochs` (the run's own copy) equal to the epochs its plan fills and calls `on_epochs` when
    that changes. The loop asks `lr(epoch, batch)` once at the start of each step: that call is the clock."""

    def __init__(self, config: TrainConfig, budget: Budget, start_epoch: int = 0, test_images: int = 10_000,
                 on_epochs: Callable[[int], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.config, self.budget, self.start_epoch, self.test_images = config, budget, start_epoch, test_images
        self.steps_per_epoch = budget.steps_per_epoch
        self.on_epochs, self.clock = on_epochs or (lambda epochs: None), clock
        self.window: deque[tuple[float, int]] = deque()  # (seconds, steps) of recent training, oldest first
        self.window_s, self.window_steps = 0.0, 0
        self.epoch_ends: list[float] = []  # measured seconds of each epoch end (evaluation, checkpoint)
        self.last: tuple[int, float] | None = None  # (step, clock) of the latest step's lr() call
        self.last_plan = clock()
        self._sync_epochs()

    @property
    def total_steps(self) -> int:
        return self.budget.total

    def batches(self, epoch: int) -> int:
        """Batches epoch `epoch` (0-based, absolute) trains: every one, but fewer in the plan's last epoch."""
        return max(0, min(self.steps_per_epoch, self.budget.total - (epoch - self.start_epoch) * self.steps_per_epoch))

    def lr(self, epoch: int, batch: int) -> float:
        step = (epoch - self.start_epoch) * self.steps_per_epoch + batch
        if self.budget.deadline is not None and (self.last is None or step > self.last[0]):
            self._clock(step, self.clock())
        b = self.budget
        return self.config.lr * lr_factor(self.config.schedule, b.progress(step) * b.reference, b.reference, b.warmup)

    def _clock(self, step: int, now: float) -> None:
        """Step `step` starts now: the time since the last one was training, or an epoch's end and one step."""
        if self.last is not None:
            last_step, last_t = self.last
            seconds, steps = now - last_t, step - last_step
            if step // self.steps_per_epoch != last_step // self.steps_per_epoch:
                self.epoch_ends.append(max(0.0, seconds - steps * self.step_s()))
                self.last_plan = -math.inf  # a new measurement of the epoch ends: plan again now
            else:
                self.window.append((seconds, steps))
                self.window_s, self.window_steps = self.window_s + seconds, self.window_steps + steps
                while len(self.window) > 1 and self.window_s - self.window[0][0] >= PACE_WINDOW_S:
                    old_s, old_steps = self.window.popleft()
                    self.window_s, self.window_steps = self.window_s - old_s, self.window_steps - old_steps
        self.last = (step, now)
        if now - self.last_plan >= min(REPLAN_S, self.budget.seconds / 50):
            self.replan(step, now)

    def step_s(self) -> float:
        """Seconds per step: the recent pace, or the probe's until there is one."""
        if self.window_steps >= 3 and self.window_s > 0:
            return self.window_s / self.window_steps
        return self.config.batch_size / max(self.budget.probe_images_per_s, 1e-9)

    def epoch_end_s(self) -> float:
        """Seconds of an epoch's end: the mean of those measured, or the evaluation's share of the pace."""
        if self.epoch_ends:
            return sum(self.epoch_ends) / len(self.epoch_ends)
        per_image = self.step_s() / self.config.batch_size
        return eval_images(self.config, self.test_images) * EVAL_COST * per_image + EPOCH_END_FIXED_S

    def replan(self, step: int, now: float) -> None:
        """Plan again as step `step` is about to run: the most steps that still end before the deadline."""
        b, self.last_plan = self.budget, now
        more = steps_that_fit(b.deadline - now, self.step_s(), self.epoch_end_s(), self.steps_per_epoch,
                              step % self.steps_per_epoch)
        total = step + max(1, more)
        if total != b.total:
            b.anchor_progress, b.anchor_step = b.progress(step), step
            b.total, b.replans = total, b.replans + 1
            self._sync_epochs()

    def _sync_epochs(self) -> None:
        """The run's config says the epochs the plan fills and the warm-up's share of them."""
        b = self.budget
        epochs = b.epochs(self.start_epoch)
        if epochs != self.config.epochs:
            self.config.epochs = epochs
            self.config.warmup_epochs = round(b.warmup / b.reference * b.total / self.steps_per_epoch, 4)
            self.on_epochs(epochs)

    @classmethod
    def for_run(cls, setup: Setup, run: Run | None, budget: Budget, start_epoch: int) -> "BudgetSchedule":
        """The schedule of a run: its config.json follows the epochs, its meta.json holds the plan."""
        config = setup.config

        def write_epochs(epochs: int) -> None:
            if run is not None:
                atomic_write_json(run.path / "config.json", {**run.config_record(), "config": config.to_dict()})

        if run is not None:
            run.update_meta(budget=budget.state())
        return cls(config, budget, start_epoch, len(setup.test[1]), write_epochs)


# -- a run's budget, from its start to its end ------------------------------------------------------------------


def plan_run(setup: Setup, started: float, emit: Callable[[Event], None], saved: dict[str, Any] | None = None,
             fork: tuple[Run, str] | None = None) -> Budget | None:
    """The budget of a run whose config has one, its config fitted to it (setup.config is replaced); None without.

    A new run or a fork measures this machine's pace and plans (BudgetTooSmall when one epoch does not fit);
    a resumed run takes the plan its checkpoint kept (`saved`), with no deadline."""
    config = setup.config
    if not config.time_budget:
        return None
    if saved is not None:
        return Budget.from_state(saved["budget"]) if saved.get("budget") else None
    emit(StatusEvent(f"Measuring this machine's training pace for a time budget of "
                     f"{duration_text(config.time_budget)}"))
    try:
        pace = measure_images_per_s(config, setup.device, PROBE_BATCHES)
    except ValueError as error:
        raise ConfigError([f"a time budget needs this machine's training pace, which may not be measured: {error}."])
    setup_s = time.monotonic() - started
    steps_per_epoch = len(setup.loader)
    budget = plan(config, steps_per_epoch, pace, config.time_budget - setup_s, len(setup.test[1]), setup_s)
    budget.deadline = started + config.time_budget
    start_epoch = (branch_epoch(*fork) or 0) if fork is not None else 0
    setup.config = fitted(config, budget, start_epoch)
    epochs = budget.total / steps_per_epoch
    emit(StatusEvent(
        f"Time budget {duration_text(config.time_budget)}: {epochs:.2f} epochs fit ({budget.total:,} steps of "
        f"{config.batch_size} images at {pace:,.0f} training images/s measured, after {setup_s:.1f} s of set-up); "
        f"training {setup.config.epochs - start_epoch} epoch{'s' if epochs > 1 else ''}"
        f"{', the last one partial' if budget.total % steps_per_epoch else ''}, planned again as it goes"))
    return budget


def report(budget: Budget, run: Run | None, started: float, status: str, steps: int) -> str:
    """How the budget went, as a sentence (also kept in the run's meta.json)."""
    epochs = steps / budget.steps_per_epoch
    if budget.deadline is None:
        line = (f"Time budget {duration_text(budget.seconds)}: this session finished the plan the run had made "
                f"({budget.total:,} steps)" if status == "finished" else "")
        outcome = {}
    else:
        seconds = time.monotonic() - started
        share = seconds / budget.seconds
        complete = "its schedule complete" if status == "finished" and steps >= budget.total else f"status {status}"
        line = (f"Time budget {duration_text(budget.seconds)}: the run took {seconds:.1f} s ({100 * share:.1f}% of "
                f"it), {steps:,} steps ({epochs:.2f} epochs), {complete}; {budget.replans} re-plans after the first "
                f"({budget.reference:,} steps at the probe's {budget.probe_images_per_s:,.0f} images/s)")
        outcome = {"seconds_used": round(seconds, 2), "share": round(share, 4)}
    if run is not None:
        run.update_meta(budget={**budget.state(), **outcome, "steps_done": steps, "status": status})
    return line
