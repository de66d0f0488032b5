"""Sweeps on Optuna, in this process on the journal file: the search space refuses what cannot run (a field's
ends, and where fields join: the largest network, the longest warm-up in the shortest run), a tiny sweep's
trials end as they should and are runs on disk, the objective is each trial's last epoch everywhere, the median
pruner compares trials of one length, a grid re-runs an interrupted point, Stop ends a trial within a batch,
and a trial ended under its worker ends its run with the reason while the worker goes on. Worker processes:
tests/test_sweep_workers.py; a real PostgreSQL: tests/test_sweep_postgres.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from optuna.trial import TrialState

from cifar_app.sweeps import cli as sweep_cli
from cifar_app.sweeps import spec as sweep_spec
from cifar_app.sweeps import views as sweep_views
from cifar_app.sweeps import worker as sweep_worker
from cifar_app.config import TrainConfig
from cifar_app.engine.setup import recorded_command
from cifar_app.store.runs import RunStore
from cifar_app.sweeps.space import Dimension, SearchSpace, SpaceError
from cifar_app.sweeps.storage import SweepError, SweepStorage, masked
from conftest import write_batches
from sweep_helpers import states, tiny_spec


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """600 training images on disk (100 held out for validation), 100 test images."""
    root = tmp_path_factory.mktemp("sweep-data")
    write_batches(root, train_per_class=60, test_per_class=10)
    return root


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the search space and the spec refuse what cannot run, and nothing starts ---------------------------------


@pytest.mark.parametrize("space, expected", [
    ({}, "the search space is empty"),
    ({"lr": {"low": 1e-2, "high": 1e-4}}, "the low end 0.01 is above the high end 0.0001"),
    ({"lr": {"low": 0.0, "high": 1e-2}}, "lr = 0: learning rate must be positive"),
    ({"lr": {"low": -1e-3, "high": 1e-2, "log": True}}, "a log range needs a positive low end"),
    ({"k": [2, 32]}, "k = 32: K = 32 is more than this app supports"),
    ({"batch_size": {"low": 64.5, "high": 128}}, "batch_size takes whole numbers"),
    ({"augment": {"low": 0, "high": 1}}, "augment is not a number: list its values"),
    ({"val_size": [1000, 2000]}, "every trial shares it"),
    ({"colour": [1, 2]}, "'colour' is not a hyperparameter a sweep varies"),
    ({"k": []}, "k: no values to choose from"),
    ({"blocks": [3, 30], "k": [1, 16], "width": [8, 64]},  # each end alone fits under the parameter cap
     "at the space's hardest point (blocks = 30, k = 16, width = 64): this network would have 373 M parameters"),
    ({"warmup_epochs": {"low": 0.0, "high": 2.0}, "epochs": [2, 5]},
     "at the space's hardest point (warmup_epochs = 2, epochs = 2): warm-up (2.0 epochs) must be shorter"),
])
def test_an_impossible_search_space_is_refused_with_its_reason(space, expected):
    with pytest.raises(SpaceError) as refused:
        SearchSpace.from_dict(space).check(TrainConfig(data_dir=""))
    assert expected in str(refused.value)


def test_flags_and_files_read_the_same_space(tmp_path):
    flags = SearchSpace.from_flags(["lr=1e-4:1e-2:log", "width=8:32:step=8", "batch_size=64,128", "augment=true,false"])
    (tmp_path / "space.toml").write_text('lr = {low = 1e-4, high = 1e-2, log = true}\n'
                                         'width = {low = 8, high = 32, step = 8}\nbatch_size = [64, 128]\n'
                                         'augment = [true, false]\n')
    assert SearchSpace.from_file(tmp_path / "space.toml") == flags
    assert flags.grid() is None and "lr is a continuous range" in flags.grid_problems()[0]
    finite = SearchSpace(flags.dimensions[1:])
    assert finite.grid() == {"width": [8, 16, 24, 32], "batch_size": [64, 128], "augment": [True, False]}
    assert finite.grid_size() == 16 and Dimension.from_flag("epochs=5").choices == (5,)
    with pytest.raises(SpaceError, match="unknown option 'cubic'"):
        SearchSpace.from_flags(["lr=1e-4:1e-2:cubic"])


def test_bad_sweeps_are_refused_and_nothing_starts(tmp_path, data_dir):
    storage = SweepStorage(tmp_path / "runs")
    with pytest.raises(SweepError, match="no sweep named 'nosuch'"):
        sweep_spec.load_sweep("nosuch", storage)
    assert sweep_spec.list_sweeps(storage) == [] and not (tmp_path / "runs").exists()  # looking wrote nothing
    for spec, expected in [
        (tiny_spec(data_dir, base={"val_size": 0}), "hold out a validation split"),
        (tiny_spec(data_dir, sampler="grid"), "grid search needs a finite space"),
        (tiny_spec(tmp_path / "nowhere"), "no CIFAR-10 under"),
        (tiny_spec(data_dir, name="two words"), "sweep name 'two words'"),
    ]:
        with pytest.raises(SweepError, match=expected):
            sweep_spec.create_sweep(spec, storage)
    assert sweep_spec.list_sweeps(storage) == []
    sweep_spec.create_sweep(tiny_spec(data_dir), storage)
    with pytest.raises(SweepError, match="a sweep named 'tiny' already exists"):
        sweep_spec.create_sweep(tiny_spec(data_dir, trials=9), storage)
    assert sweep_spec.load_sweep("tiny", storage)[1].trials == 4  # the first one stands
    unreachable = SweepStorage(tmp_path / "runs", "postgresql://user:secret@127.0.0.1:9/sweeps")
    with pytest.raises(SweepError, match=r"cannot reach the sweep storage postgresql://user:\*\*\*@127.0.0.1:9") as e:
        sweep_spec.create_sweep(tiny_spec(data_dir, name="elsewhere"), unreachable)
    assert "secret" not in str(e.value)
    with pytest.raises(SweepError, match="unsupported sweep storage"):
        SweepStorage(tmp_path, "mysql://db/sweeps").open()
    with pytest.raises(SweepError, match="Hyperband already decides how many epochs"):
        sweep_spec.create_sweep(tiny_spec(data_dir, name="hb", space={"epochs": [2, 4]}, pruner="hyperband"), storage)
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name != "sweeps"]  # no run was started


def test_a_password_is_masked_and_never_taken_from_a_command_line(tmp_path, capsys):
    url = "postgresql://sweeper@db-host:5432/sweeps?sslmode=require&password=hunter2-xyz"
    assert masked(url, url) == "postgresql://sweeper@db-host:5432/sweeps?sslmode=require&password=***"
    assert masked("postgresql://sweeper:hunter2-xyz@db-host/sweeps", None) == "postgresql://sweeper:***@db-host/sweeps"
    assert SweepStorage(tmp_path, url).describe().count("hunter2") == 0
    # a password on --storage is refused with the fix, before anything connects
    assert sweep_cli.main(["list", "--runs-dir", str(tmp_path), "--storage", url]) == 1
    out = capsys.readouterr().out
    assert "export CIFAR_SWEEP_STORAGE" in out and "hunter2" not in out
    # and what a run records of its command line keeps no --storage value, whatever it was
    argv = ["/x/cifar_app/sweep.py", "work", "s", "--storage", url, "--runs-dir", "r"]
    assert "hunter2" not in recorded_command(argv) and "db-host" not in recorded_command(argv)
    assert recorded_command(["/x/cifar_app/sweep.py", f"--storage={url}"]) == "/x/cifar_app/sweep.py --storage=***"


# -- a tiny sweep in this process -----------------------------------------------------------------------------


def test_a_tiny_sweep_completes_prunes_and_fails_its_trials_and_each_is_a_run(tmp_path, data_dir):
    """Four trials, the first three given: two good learning rates run to the end, then a hopeless one is
    pruned after its first epoch (below the median of the two), and one that diverges fails with its reason."""
    space = {"lr": {"low": 1e-7, "high": 10.0, "log": True}, "optimizer": ["adam", "sgd"], "momentum": [0.9, 0.99]}
    storage = SweepStorage(tmp_path / "runs")
    study = sweep_spec.create_sweep(tiny_spec(data_dir, space=space, pruner="median", prune_startup=2), storage)
    for lr, optimizer, momentum in [(3e-3, "adam", 0.9), (5e-3, "adam", 0.9), (1e-7, "adam", 0.9), (10.0, "sgd", 0.99)]:
        study.enqueue_trial({"lr": lr, "optimizer": optimizer, "momentum": momentum})
    lines = []
    ran = sweep_worker.work("tiny", storage, echo=lines.append)

    study, spec = sweep_spec.load_sweep("tiny", storage)
    trials = study.get_trials()
    assert ran == {"complete": 2, "pruned": 1, "failed": 1}
    assert states(study) == ["complete", "complete", "pruned", "failed"]
    store = RunStore(tmp_path / "runs")
    runs = {t.number: store.get(t.user_attrs["run_id"]) for t in trials}
    assert len(store.runs()) == 4 == len({run.id for run in runs.values()})
    for number, run in runs.items():
        record = run.config_record()
        assert (record["sweep"], record["trial"]) == ("tiny", number)
        assert run.config().lr == trials[number].params["lr"]
    epochs = {n: len(run.metrics()) for n, run in runs.items()}
    assert epochs[0] == epochs[1] == 3 and epochs[2] == 1  # the pruned trial trained fewer epochs
    assert "pruned after epoch 1 of 3" in trials[2].user_attrs["reason"]
    assert runs[2].status() == "stopped" and "pruned" in runs[2].meta()["reason"]  # resumable as any run
    assert "the run diverged" in trials[3].user_attrs["reason"] and runs[3].status() == "failed"
    for number in (0, 1):  # the objective is the last epoch's validation accuracy, and the run says the same
        run, trial = runs[number], trials[number]
        assert sorted(trial.intermediate_values) == [1, 2, 3]  # every epoch validated and reported
        assert trial.value == trial.intermediate_values[3] == run.metrics()[-1]["val_acc"] == run.meta()["best_val_acc"]
        assert run.meta()["best_epoch"] == 3 and run.load_checkpoint("best")["epoch"] == 3  # best.pt: that epoch
        assert [r["test_acc"] is not None for r in run.metrics()] == [False, False, True]  # tested once, at the end
    best = study.best_trial
    assert best.user_attrs["test_acc"] == runs[best.number].meta()["best_test_acc"]

    state = sweep_views.sweep_state(study, spec)
    assert (state.phase, state.done, state.best.number) == ("finished", 4, study.best_trial.number)
    rows = sweep_views.trial_rows(study, spec)
    assert [r["epochs"] for r in rows] == ["3/3", "3/3", "1/3", "0/3"] and rows[0]["run"] == runs[0].id
    assert [r["val_acc"] for r in rows[:3]] == [trials[0].value, trials[1].value, trials[2].intermediate_values[1]]
    board = "\n".join(sweep_views.leaderboard_lines(study, spec))
    assert f"best: trial {study.best_trial.number}" in board and "its test accuracy" in board
    assert any(line.startswith("trial 2 pruned") for line in lines)
    assert sweep_worker.work("tiny", storage) == {}  # the budget is spent: a late worker takes nothing


def test_a_grid_runs_each_point_once_however_many_trials_are_asked_under_hyperband(tmp_path, data_dir):
    space = {"lr": [3e-3, 1e-7], "label_smoothing": [0.0, 0.1]}
    storage = SweepStorage(tmp_path / "runs")
    spec = tiny_spec(data_dir, space=space, sampler="grid", pruner="hyperband", trials=10, base={"epochs": 2})
    assert spec.budget == 4  # the grid's size, not the 10 trials asked for
    sweep_spec.create_sweep(spec, storage)
    sweep_worker.work("tiny", storage)
    study, _ = sweep_spec.load_sweep("tiny", storage)
    points = sorted((t.params["lr"], t.params["label_smoothing"]) for t in study.trials)
    assert points == [(1e-7, 0.0), (1e-7, 0.1), (3e-3, 0.0), (3e-3, 0.1)]
    assert set(states(study)) <= {"complete", "pruned"} and "complete" in states(study)


def test_stop_ends_the_running_trial_within_a_batch_and_no_other_starts(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(sweep_worker, "STOP_CHECK_S", 0.05)
    storage = SweepStorage(tmp_path / "runs")
    study = sweep_spec.create_sweep(tiny_spec(data_dir, base={"epochs": 40}), storage)
    done = []
    worker = threading.Thread(target=lambda: done.append(sweep_worker.work("tiny", storage)), daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not any(t.intermediate_values for t in study.get_trials()):
        assert time.monotonic() < deadline and worker.is_alive()
        time.sleep(0.05)
    sweep_spec.request_stop(study)
    worker.join(timeout=10)
    assert not worker.is_alive() and done == [{"stopped": 1}]
    trial, again = study.get_trials()
    assert "the sweep was stopped during epoch" in trial.user_attrs["reason"]
    spec = sweep_spec.load_sweep("tiny", storage)[1]
    assert sweep_views.trial_rows(study, spec)[0]["state"] == "stopped"  # a person's stop is no failure
    assert "1 stopped" in sweep_views.sweep_state(study, spec).line()
    assert trial.user_attrs["epochs_done"] < 5
    # the interrupted trial leaves its slot of the budget to a re-run of its hyperparameters, queued
    assert again.state == TrialState.WAITING and again.system_attrs["fixed_params"] == trial.params
    state = sweep_views.sweep_state(study, sweep_spec.load_sweep("tiny", storage)[1])
    assert (state.phase, state.done) == ("stopped", 0)
    sweep_spec.request_stop(study, False)
    assert sweep_views.sweep_state(study, sweep_spec.load_sweep("tiny", storage)[1]).phase == "waiting"


def test_the_cli_creates_shows_and_stops_a_sweep(tmp_path, data_dir, capsys):
    common = ["--runs-dir", str(tmp_path / "runs")]
    create = ["create", "cli", *common, "--data-dir", str(data_dir), "--val-size", "100", "--vary", "lr=1e-3:1e-2:log",
              "--vary", "batch_size=32,64", "--trials", "3", "--set", "epochs=2", "--set", "device=cpu"]
    assert sweep_cli.main(create) == 0
    assert "created sweep cli" in capsys.readouterr().out
    assert sweep_cli.main(create) == 1
    assert "already exists" in capsys.readouterr().out
    assert sweep_cli.main(["create", "bad", *common, "--data-dir", str(data_dir), "--vary", "lr=0.1:0.01"]) == 1
    assert "the low end 0.1 is above the high end 0.01" in capsys.readouterr().out
    assert sweep_cli.main(["list", *common]) == 0 and capsys.readouterr().out.split() == ["cli"]
    assert sweep_cli.main(["stop", "cli", *common]) == 0
    assert sweep_cli.main(["show", "cli", *common]) == 0
    out = capsys.readouterr().out
    assert "Stopped: 0 of 3 trials done" in out and "importances need at least 3 complete trials" in out
    assert "objective: validation accuracy at each trial's last epoch" in out
    spec = sweep_spec.load_sweep("cli", SweepStorage(tmp_path / "runs"))[1]
    assert spec.trial_config({"epochs": 2}, 0).eval_every == 2 and spec.base.val_size == 100  # tested at the end
    # testing more often would let an earlier epoch be the run's best, not the one its objective comes from
    assert sweep_cli.main([*create[:1], "every", *create[2:], "--set", "eval_every=1"]) == 1
    assert "a sweep tests each trial once, at its last epoch" in capsys.readouterr().out




# -- what a trial's figures mean, and what the pruner compares -------------------------------------------------


def test_a_running_trial_shows_its_latest_epoch_not_its_best_so_far(tmp_path, data_dir):
    storage = SweepStorage(tmp_path / "runs")
    study = sweep_spec.create_sweep(tiny_spec(data_dir), storage)
    trial = study.ask()
    trial.report(50.0, 1)
    trial.report(40.0, 2)  # a trial's value is its last epoch's: the objective a complete trial is judged on
    (row,) = sweep_views.trial_rows(study, sweep_spec.load_sweep("tiny", storage)[1])
    assert (row["state"], row["val_acc"], row["epochs"]) == ("running", 40.0, "2/3")


def test_the_median_pruner_compares_a_trial_only_with_trials_planned_for_as_many_epochs(tmp_path, data_dir):
    """With epochs searched under a one-cycle schedule, a 4-epoch trial at epoch 1 (its learning rate near the
    peak) is not judged against a 2-epoch trial's annealed epochs; another 2-epoch trial is."""
    storage = SweepStorage(tmp_path / "runs")
    spec = tiny_spec(data_dir, space={"lr": [3e-3], "epochs": [2, 4]}, pruner="median", prune_startup=1,
                     base={"schedule": "onecycle", "warmup_epochs": 0.5})
    sweep_spec.create_sweep(spec, storage)
    study, spec = sweep_spec.load_sweep("tiny", storage)
    verdicts = []
    for epochs, first in ((2, 60.0), (4, 40.0), (2, 40.0)):
        study.enqueue_trial({"lr": 3e-3, "epochs": epochs})
        trial = study.ask()
        spec.space.suggest(trial)
        trial.report(first, 1)
        verdicts.append(trial.should_prune())
        if epochs == 2 and not verdicts[-1]:
            trial.report(70.0, 2)
            study.tell(trial, 70.0)
    assert verdicts == [False, False, True]


# -- interruptions: a grid point is trained again; a trial ended under its worker ------------------------------


def test_a_grid_re_runs_an_interrupted_point_and_finishes_only_when_every_point_is_trained(tmp_path, data_dir):
    space = {"lr": [3e-3, 5e-3], "label_smoothing": [0.0, 0.1]}
    storage = SweepStorage(tmp_path / "runs")
    sweep_spec.create_sweep(tiny_spec(data_dir, space=space, sampler="grid", trials=4, base={"epochs": 1}), storage)
    quit = threading.Event()
    # the first worker is told to end (Ctrl-C) as its second trial starts, then another worker does the rest
    sweep_worker.work("tiny", storage, quit=quit, echo=lambda line: quit.set() if line.startswith("trial 1:") else None)
    study, spec = sweep_spec.load_sweep("tiny", storage)
    assert sweep_views.sweep_state(study, spec).phase == "waiting"  # not finished: a point is left
    sweep_worker.work("tiny", storage)
    trials = study.get_trials()
    trained = sorted((t.params["lr"], t.params["label_smoothing"]) for t in trials if t.state == TrialState.COMPLETE)
    assert trained == [(3e-3, 0.0), (3e-3, 0.1), (5e-3, 0.0), (5e-3, 0.1)]  # every point once, none twice
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and "its worker was told to end" in interrupted[0].user_attrs["reason"]
    state = sweep_views.sweep_state(study, spec)
    assert (state.phase, state.done) == ("finished", 4)


def test_a_trial_ended_under_its_worker_ends_its_run_with_the_reason_and_the_worker_goes_on(tmp_path, data_dir,
                                                                                          monkeypatch):
    """Another process took this worker for dead (a database away for longer than the grace period) and failed
    its trial: the worker's run ends within a batch, saying why, and the worker trains the trial's re-run."""
    monkeypatch.setattr(sweep_worker, "STOP_CHECK_S", 0.05)
    storage = SweepStorage(tmp_path / "runs")
    study = sweep_spec.create_sweep(tiny_spec(data_dir, trials=1, base={"epochs": 6}), storage)
    done, lines = [], []
    worker = threading.Thread(target=lambda: done.append(sweep_worker.work("tiny", storage, echo=lines.append)),
                              daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not any(t.intermediate_values for t in study.get_trials()):
        assert time.monotonic() < deadline and worker.is_alive()
        time.sleep(0.05)
    first = study.get_trials()[0]
    for key, value in (("reason", "its worker went quiet 400 s ago"), ("interrupted", True)):
        study._storage.set_trial_user_attr(first._trial_id, key, value)  # as a claim or the page would, then
    study.tell(first.number, state=TrialState.FAIL)
    worker.join(timeout=60)
    assert not worker.is_alive() and done, "\n".join(lines)
    first, again = study.get_trials()
    run = RunStore(storage.runs_dir).get(first.user_attrs["run_id"])
    assert run.status() == "stopped" and "ended by another process (its worker went quiet 400 s ago)" in \
        run.meta()["reason"]
    assert len(run.metrics()) < 6 and again.user_attrs["rerun_of"] == 0 and again.state == TrialState.COMPLETE
    assert again.params == first.params and done == [{"failed": 1, "complete": 1}]


def test_a_run_whose_trial_cannot_be_recorded_is_failed_with_the_reason_not_left_running(tmp_path):
    from cifar_app.engine.loop import train
    from conftest import tiny_cifar, tiny_config

    class Unreachable:
        """A worker whose database stays away: recording the trial's run id gives up after its patience."""

        store, spec = RunStore(tmp_path / "runs"), type("Spec", (), {"name": "tiny"})()

        def set_attr(self, trial, key, value):
            raise SweepError("the database could not be reached for 60 s")

    store = sweep_worker.TrialRunStore(Unreachable(), type("Trial", (), {"number": 3})(), None)
    with pytest.raises(SweepError):
        train(tiny_config(epochs=1), data=tiny_cifar(), store=store)
    (run,) = store.runs()
    assert run.status() == "failed" and "could not be reached" in run.meta()["reason"]
    assert run.resume_problem().startswith("it failed (the run could not start")


def test_a_trial_that_cannot_fit_in_memory_fails_with_the_reason_before_it_trains(tmp_path, data_dir):
    storage = SweepStorage(tmp_path / "runs")
    huge = {"blocks": 11, "width": 128, "k": 4, "batch_size": 8192}  # hundreds of GB at its peak
    study = sweep_spec.create_sweep(tiny_spec(data_dir, base=huge, trials=1), storage)
    assert sweep_worker.work("tiny", storage) == {"failed": 1}
    (trial,) = study.get_trials()
    assert trial.user_attrs["reason"].startswith("could not start: this run would need about")
    assert not RunStore(storage.runs_dir).runs()  # no run folder was made for it
