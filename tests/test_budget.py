"""A time budget (`--time-budget 5m`): a run plans its steps from this machine's pace, keeps to the budget as the
pace moves, completes its schedule, records what it chose, and refuses a budget it cannot use with a sentence."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cifar_app.engine import budget as budget_module
from cifar_app.config import PRESETS, ConfigError, matching_preset, parse_duration, preset
from cifar_app.engine.budget import Budget, BudgetSchedule, BudgetTooSmall, estimate, plan, steps_that_fit
from cifar_app.engine.cli import main
from cifar_app.engine.loop import train
from cifar_app.events import EpochEvent, StatusEvent
from cifar_app.store.runs import RunStore
from conftest import tiny_config, write_batches


def test_durations_read_as_people_write_them_and_nonsense_gets_a_sentence():
    assert [parse_duration(t) for t in ("5m", "300", "90s", "1h30m", "4.5 min", "2 hours", "0")] == \
        [300, 300, 90, 5400, 270, 7200, 0]
    for bad in ("5x", "", "1h30", "-5m", "soon"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)


def test_the_cli_refuses_a_budget_it_cannot_read(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--time-budget", "5x"])
    assert exit_.value.code == 2
    assert "argument --time-budget: '5x' is not a duration: write it as 5m" in capsys.readouterr().err


def test_a_preset_can_be_defined_by_a_budget():
    five = preset("5min")
    assert five.time_budget == 300 and matching_preset(five) == "5min"
    assert {k: v for k, v in PRESETS["5min"].items() if k != "time_budget"} == PRESETS["quick"]
    assert matching_preset(five.replace(time_budget=0)) == "quick"
    assert "the time budget cannot be negative" in " ".join(preset("quick", time_budget=-1).validate())


def test_steps_that_fit_count_the_epoch_ends():
    # 10 steps an epoch of 1 s each, 5 s at each epoch's end
    assert steps_that_fit(15, 1, 5, 10) == 10  # one epoch and its end
    assert steps_that_fit(14.9, 1, 5, 10) == 9  # not quite: the epoch ends early (and is evaluated)
    assert steps_that_fit(15 + 15 + 6 + 5, 1, 5, 10) == 26  # two whole epochs, then 6 steps and the last end
    assert steps_that_fit(15 + 15 + 3 + 5, 1, 5, 10) == 20  # 3 steps are not worth a 5 s evaluation
    assert steps_that_fit(4, 1, 5, 10) == 0
    assert steps_that_fit(7, 1, 5, 10, done_in_epoch=8) == 2  # finishing the epoch under way


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(schedule: BudgetSchedule, clock: FakeClock, step_s: callable, epoch_end_s: float) -> list[float]:
    """Run the loop's calls against a fake clock: each step takes step_s(t) seconds, each epoch end epoch_end_s.
    Returns every step's learning rate; the clock ends where the run would."""
    config, rates, epoch = schedule.config, [], 0
    while epoch < config.epochs:
        for batch in range(schedule.steps_per_epoch):
            if batch >= schedule.batches(epoch):
                break
            rates.append(schedule.lr(epoch, batch))
            clock.now += step_s(clock.now)
        clock.now += epoch_end_s
        epoch += 1
    return rates


def test_the_schedule_keeps_to_the_deadline_when_the_machine_slows_and_still_completes():
    config = tiny_config(schedule="onecycle", warmup_epochs=0.5, epochs=3, lr=1.0, time_budget=100.0)
    clock = FakeClock()
    # the probe said 0.1 s a step (100 steps an epoch); halfway the machine gets twice as slow
    budget = plan(config, 100, images_per_s=config.batch_size / 0.1, seconds_left=100, test_images=0)
    budget.deadline = 100.0
    schedule = BudgetSchedule(config, budget, clock=clock)
    planned_epochs = config.epochs
    rates = simulate(schedule, clock, lambda t: 0.1 if t < 50 else 0.2, epoch_end_s=1.0)
    assert clock.now == pytest.approx(100, rel=0.03)  # a plan made once would have ended near 150 s
    assert config.epochs < planned_epochs and len(rates) == budget.total
    assert budget.replans > 0
    peak = rates.index(max(rates))
    assert rates[0] == pytest.approx(0.04, rel=0.2) and 0 < peak < len(rates) / 3  # one-cycle: rise, then fall
    assert all(b <= a + 1e-12 for a, b in zip(rates[peak:], rates[peak + 1:]))  # re-plans make no jump up
    assert rates[-1] < 0.02  # ...to (nearly) zero at the last step: the schedule is complete


def test_a_faster_machine_gets_more_epochs():
    config = tiny_config(schedule="onecycle", warmup_epochs=0.5, epochs=3, time_budget=100.0)
    clock = FakeClock()
    budget = plan(config, 100, images_per_s=config.batch_size / 0.2, seconds_left=100, test_images=0)
    budget.deadline = 100.0
    first = budget.total
    rates = simulate(BudgetSchedule(config, budget, clock=clock), clock, lambda t: 0.1, epoch_end_s=1.0)
    assert clock.now == pytest.approx(100, rel=0.03) and len(rates) > 1.8 * first


def test_a_tiny_run_within_a_budget_completes_its_schedule_and_records_its_plan(tiny_data, tmp_path):
    messages = []
    config = tiny_config(schedule="onecycle", warmup_epochs=0.5, epochs=2, time_budget=2.0)
    on_event = lambda e: messages.append(e) if isinstance(e, (StatusEvent, EpochEvent)) else None  # noqa: E731
    result = train(config, data=tiny_data, on_event=on_event, store=RunStore(tmp_path))
    assert result.status == "finished"
    epochs = [e for e in messages if isinstance(e, EpochEvent)]
    saved = json.loads((result.run.path / "config.json").read_text())["config"]
    assert saved["time_budget"] == 2.0 and saved["epochs"] == epochs[-1].epoch == epochs[-1].epochs
    meta = result.run.meta()["budget"]
    assert meta["steps_done"] == meta["total"] and meta["status"] == "finished"
    assert meta["steps_per_epoch"] == len(tiny_data.train_labels) // config.batch_size
    assert epochs[-1].lr < 0.05 * config.lr  # the one-cycle ran to its end
    text = "\n".join(e.message for e in messages if isinstance(e, StatusEvent))
    assert "Time budget 2.0 s:" in text and "epochs fit" in text and "its schedule complete" in text


def test_a_budget_too_small_for_one_epoch_is_refused_before_anything_is_written(tiny_data, tmp_path, capsys,
                                                                               monkeypatch):
    def slow_probe(config, device, batches=3):
        time.sleep(0.05)
        return 50.0  # images/s: the tiny data's epoch (192 images and its test pass) takes about 4.6 s

    monkeypatch.setattr(budget_module, "measure_images_per_s", slow_probe)
    with pytest.raises(BudgetTooSmall, match=r"A time budget of 2.0 s fits 0\.\d of an epoch of this model here "
                                             r"\(50 training images/s measured; an epoch with its evaluation takes "
                                             r"about 4.6 s.*Give it at least 10 s \(--time-budget 10s\)"):
        train(tiny_config(time_budget=2), data=tiny_data, store=RunStore(tmp_path / "runs"))
    with pytest.raises(BudgetTooSmall, match=r"A time budget of 0.04 s was spent before training could start: "
                                             r"loading the data and measuring this machine's pace took 0.0\d+ s"):
        train(tiny_config(time_budget=0.04), data=tiny_data, store=RunStore(tmp_path / "runs"))
    assert RunStore(tmp_path / "runs").runs() == []
    monkeypatch.undo()
    write_batches(tmp_path / "data")
    code = main(["--preset", "quick", "--blocks", "3", "--data-dir", str(tmp_path / "data"), "--time-budget", "0.01s",
                 "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 1 and "error: A time budget of 0.01 s" in out and "Give it at least" in out
    assert RunStore(tmp_path / "runs").runs() == []


def test_a_stopped_budgeted_run_resumes_to_the_plan_it_had(tiny_data, tmp_path):
    stop = threading.Event()
    store = RunStore(tmp_path)
    on_event = lambda e: stop.set() if isinstance(e, EpochEvent) and e.epoch == 1 else None  # noqa: E731
    config = tiny_config(schedule="onecycle", warmup_epochs=0.5, epochs=2, time_budget=1.5)
    first = train(config, data=tiny_data, on_event=on_event, stop=stop, store=store)
    assert first.status == "stopped"
    total = first.run.meta()["budget"]["total"]  # the plan when it stopped
    resumed = train(config, data=tiny_data, store=store, resume=store.get(first.run.id))
    assert resumed.status == "finished"
    meta = resumed.run.meta()["budget"]
    assert meta["total"] == meta["steps_done"] == total and "seconds_used" not in meta  # no deadline any more
    assert resumed.history[-1].epoch == resumed.run.config().epochs == -(-total // meta["steps_per_epoch"])
    assert resumed.history[-1].lr < 0.05 * config.lr


def test_the_train_page_forecast_says_what_fits():
    config = preset("5min")
    assert estimate(config, 600.0, 50_000, 10_000) == pytest.approx(3.2, abs=0.4)
    assert "fits 0.0 of an epoch" in estimate(config.replace(time_budget=6), 600.0, 50_000, 10_000)
    with pytest.raises(ConfigError):
        plan(config.replace(time_budget=60), 390, 100.0, 55, 10_000)
    assert isinstance(Budget.from_state({"seconds": 1, "steps_per_epoch": 2, "total": 3, "warmup": 0,
                                         "reference": 3, "unknown": 1}), Budget)


def test_a_budgeted_fork_plans_its_own_epochs_from_its_branch(tiny_data, tmp_path):
    store = RunStore(tmp_path)
    parent = train(tiny_config(epochs=2), data=tiny_data, store=store)
    config = tiny_config(epochs=2, schedule="onecycle", warmup_epochs=0.5, time_budget=1.0)  # 2 epochs: none after 2
    fork = train(config, data=tiny_data, store=store, fork=(parent.run, "last"))
    assert fork.status == "finished" and fork.history[0].epoch == 3
    meta = fork.run.meta()["budget"]
    assert fork.history[-1].epoch == fork.run.config().epochs == 2 + -(-meta["total"] // meta["steps_per_epoch"])
