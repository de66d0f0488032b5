"""Sweeps on Optuna: the search space refuses what cannot run, a tiny sweep's trials end as they should and are
runs on disk, workers in separate processes share a budget (on the journal file and on a real PostgreSQL), a
killed worker's trial is marked failed while the sweep goes on, and Stop ends a trial within a batch."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
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
from cifar_app.store.runs import RunStore
from cifar_app.sweeps.space import Dimension, SearchSpace, SpaceError
from cifar_app.sweeps.spec import SweepSpec
from cifar_app.sweeps.storage import SweepError, SweepStorage
from conftest import ROOT, write_batches

TINY = dict(blocks=3, width=8, k=2, epochs=3, batch_size=32, device="cpu", val_size=100, records=False)
WORKER_ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


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


def tiny_spec(data_dir: Path, name: str = "tiny", space: dict | None = None, **changes) -> SweepSpec:
    space = SearchSpace.from_dict(space or {"lr": {"low": 1e-3, "high": 1e-2, "log": True}})
    base = TrainConfig(**{**TINY, "data_dir": str(data_dir), **changes.pop("base", {})})
    return SweepSpec(name, base, space, **{"trials": 4, "pruner": "none", **changes})


def states(study) -> list[str]:
    return [sweep_spec.STATE_NAMES[t.state] for t in study.get_trials()]


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
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name != "sweeps"]  # no run was started


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
    best_val = {n: run.meta()["best_val_acc"] for n, run in runs.items() if trials[n].state.name == "COMPLETE"}
    assert study.best_trial.number == max(best_val, key=best_val.get)
    assert study.best_trial.value == max(best_val.values())
    assert study.best_trial.user_attrs["test_acc"] == runs[study.best_trial.number].meta()["best_test_acc"]

    state = sweep_views.sweep_state(study, spec)
    assert (state.phase, state.done, state.best.number) == ("finished", 4, study.best_trial.number)
    rows = sweep_views.trial_rows(study, spec)
    assert [r["epochs"] for r in rows] == ["3/3", "3/3", "1/3", "0/3"] and rows[0]["run"] == runs[0].id
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
    assert not worker.is_alive() and done == [{"failed": 1}]
    (trial,) = study.get_trials()
    assert "the sweep was stopped during epoch" in trial.user_attrs["reason"]
    assert trial.user_attrs["epochs_done"] < 5
    state = sweep_views.sweep_state(study, sweep_spec.load_sweep("tiny", storage)[1])
    assert (state.phase, state.done) == ("stopped", 0)  # the interrupted trial leaves its slot of the budget
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
    spec = sweep_spec.load_sweep("cli", SweepStorage(tmp_path / "runs"))[1]
    assert spec.base.eval_every == 2 and spec.base.val_size == 100  # the test set once, at each trial's end


# -- worker processes ---------------------------------------------------------------------------------------


def start_workers(storage: SweepStorage, name: str, count: int, log_dir: Path) -> list[subprocess.Popen]:
    log_dir.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(sweep_worker.worker_command(name, storage), cwd=ROOT, env={**os.environ, **WORKER_ENV},
                             stdout=open(log_dir / f"worker-{i}.log", "w"), stderr=subprocess.STDOUT)
            for i in range(count)]


def wait_all(processes: list[subprocess.Popen], timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    return codes


def check_shared_budget(storage: SweepStorage, data_dir: Path, log_dir: Path) -> None:
    """Two worker processes on one study of four trials: four trials in all, each trained once, by both."""
    sweep_spec.create_sweep(tiny_spec(data_dir, name="shared", trials=4, base={"epochs": 1}), storage)
    workers = start_workers(storage, "shared", 2, log_dir)
    assert wait_all(workers) == [0, 0], [p.read_text()[-2000:] for p in log_dir.iterdir()]
    study, _ = sweep_spec.load_sweep("shared", storage)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(4)) and states(study) == ["complete"] * 4
    run_ids = [t.user_attrs["run_id"] for t in trials]
    on_disk = [r for r in RunStore(storage.runs_dir).runs() if r.config_record().get("sweep") == "shared"]
    assert len(set(run_ids)) == 4 == len(on_disk) and {r.id for r in on_disk} == set(run_ids)  # none ran twice
    assert {t.user_attrs["worker"]["pid"] for t in trials} == {p.pid for p in workers}  # both took part


def test_two_worker_processes_share_one_budget_on_the_journal_file(tmp_path, data_dir):
    check_shared_budget(SweepStorage(tmp_path / "runs"), data_dir, tmp_path / "logs")


def test_a_killed_worker_s_trial_is_failed_and_the_other_worker_finishes_the_sweep(tmp_path, data_dir):
    storage = SweepStorage(tmp_path / "runs")
    sweep_spec.create_sweep(tiny_spec(data_dir, name="kill", trials=3, base={"epochs": 4}), storage)
    study, _ = sweep_spec.load_sweep("kill", storage)
    victim, survivor = start_workers(storage, "kill", 2, tmp_path / "logs")
    deadline = time.monotonic() + 90
    while True:  # the victim's trial has its run and has trained for a moment
        mine = [t for t in study.get_trials(states=(TrialState.RUNNING,))
                if t.user_attrs.get("worker", {}).get("pid") == victim.pid and t.user_attrs.get("run_id")]
        if mine:
            break
        assert time.monotonic() < deadline and victim.poll() is None, "the victim never started a trial"
        time.sleep(0.05)
    time.sleep(0.3)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert wait_all([survivor]) == [0]
    trials = {t.number: t for t in study.get_trials()}
    killed = trials[mine[0].number]
    assert killed.state.name == "FAIL" and killed.user_attrs["interrupted"]
    assert f"its worker (pid {victim.pid}) died during epoch" in killed.user_attrs["reason"]
    # the interrupted trial does not use the budget: three trials ran to their end besides it
    assert sorted(sweep_spec.STATE_NAMES[t.state] for t in trials.values()) == ["complete"] * 3 + ["failed"]
    run = RunStore(storage.runs_dir).get(killed.user_attrs["run_id"])
    assert run.status() == "interrupted"  # kept, and resumable from the Runs page


# -- the same on a real PostgreSQL server ---------------------------------------------------------------------


def find_postgres() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture
def postgres_url(tmp_path):
    """A PostgreSQL server of the test's own, in a temporary folder, on a free local port; its URL."""
    import socket
    import tempfile

    bindir = find_postgres()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)")
    root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as nobody
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: initdb cannot run as root")
        shutil.chown(root, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True, cwd=root)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                              str(root / "server.log"), "-w", "start"], capture_output=True, cwd=root)
    if started.returncode != 0:
        pytest.skip(f"PostgreSQL did not start: {(root / 'server.log').read_text()[-500:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def test_two_worker_processes_share_one_budget_on_postgresql(tmp_path, data_dir, postgres_url):
    check_shared_budget(SweepStorage(tmp_path / "runs", postgres_url), data_dir, tmp_path / "logs")
