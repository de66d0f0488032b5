"""Sweep workers as processes, on the one-machine journal file: two share a budget, a killed one's trial is failed
(the store's pid rule) and run again, Ctrl-C ends one that is still loading its data, workers take the GPUs their
parent was given, and a worker on a machine without the sweep's device stops without taking a trial."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from optuna.trial import TrialState

from cifar_app.sweeps import cli as sweep_cli
from cifar_app.sweeps import spec as sweep_spec
from cifar_app.sweeps import worker as sweep_worker
from cifar_app.store.runs import RunStore
from cifar_app.sweeps.storage import SweepStorage
from conftest import write_batches, write_folder
from sweep_helpers import logs, start_workers, states, tiny_spec, wait_all


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep-data")
    write_batches(root, train_per_class=60, test_per_class=10)
    return root


def check_shared_budget(storage: SweepStorage, data_dir: Path, log_dir: Path) -> None:
    """Two worker processes on one study of four trials: four trials in all, each trained once, by both."""
    sweep_spec.create_sweep(tiny_spec(data_dir, name="shared", trials=4, base={"epochs": 1}), storage)
    workers = start_workers(storage, "shared", 2, log_dir)
    assert wait_all(workers) == [0, 0], logs(log_dir)
    study, _ = sweep_spec.load_sweep("shared", storage)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(4)) and states(study) == ["complete"] * 4
    run_ids = [t.user_attrs["run_id"] for t in trials]
    on_disk = [r for r in RunStore(storage.runs_dir).runs() if r.config_record().get("sweep") == "shared"]
    assert len(set(run_ids)) == 4 == len(on_disk) and {r.id for r in on_disk} == set(run_ids)  # none ran twice
    assert {t.user_attrs["worker"]["pid"] for t in trials} == {p.pid for p in workers}  # both took part


def test_two_worker_processes_share_one_budget_on_the_journal_file(tmp_path, data_dir):
    check_shared_budget(SweepStorage(tmp_path / "runs"), data_dir, tmp_path / "logs")


def test_a_killed_worker_s_trial_is_failed_and_run_again_while_the_other_worker_finishes(tmp_path, data_dir):
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
    assert wait_all([survivor]) == [0], logs(tmp_path / "logs")
    trials = {t.number: t for t in study.get_trials()}
    killed = trials[mine[0].number]
    assert killed.state.name == "FAIL" and killed.user_attrs["interrupted"]
    assert f"its worker (pid {victim.pid}) died during epoch" in killed.user_attrs["reason"]
    # the interrupted trial does not use the budget: its re-run (same hyperparameters) and two more ran to the end
    (rerun,) = [t for t in trials.values() if t.user_attrs.get("rerun_of") == killed.number]
    assert rerun.state == TrialState.COMPLETE and rerun.params == killed.params
    assert sorted(sweep_spec.STATE_NAMES[t.state] for t in trials.values()) == ["complete"] * 3 + ["failed"]
    run = RunStore(storage.runs_dir).get(killed.user_attrs["run_id"])
    assert run.status() == "interrupted"  # kept, and resumable from the Runs page


def test_ctrl_c_ends_a_worker_that_is_still_loading_its_data(tmp_path):
    """The data is on a stalled mount (here an image that is a named pipe nobody writes: reading it blocks for
    ever): Ctrl-C ends the worker at once with a sentence, and it took no trial."""
    data = write_folder(tmp_path / "data", train_per_class=2, test_per_class=1)
    os.mkfifo(data / "train" / "airplane" / "zzzz.png")
    storage = SweepStorage(tmp_path / "runs")
    sweep_spec.create_sweep(tiny_spec(data, name="slow", base={"val_size": 5}), storage)
    (worker,) = start_workers(storage, "slow", 1, tmp_path / "logs")
    log = tmp_path / "logs" / "worker-0.log"
    try:
        deadline = time.monotonic() + 60
        while "loading CIFAR-10" not in log.read_text():
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
            time.sleep(0.1)
        time.sleep(0.5)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(15) == 128 + signal.SIGINT
    finally:
        worker.kill()
    assert "stopped before taking a trial" in log.read_text() and "Traceback" not in log.read_text()
    assert sweep_spec.load_sweep("slow", storage)[0].get_trials() == []


def test_workers_take_the_gpus_their_parent_was_given_and_get_the_storage_in_their_environment(tmp_path, data_dir,
                                                                                               monkeypatch):
    """A parent given GPUs 2 and 3 starts its workers on 2 and 3 (not 0 and 1); the storage's URL reaches them
    through their environment, never their command line."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    storage = SweepStorage(tmp_path / "runs", url)
    study = sweep_spec.create_sweep(tiny_spec(data_dir, name="gpus"), storage)
    sweep_spec.request_stop(study)  # the workers start, find the sweep stopped, and end
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    processes = sweep_worker.launch_workers("gpus", storage, 2, gpus=2)
    # what each worker was started with (not /proc, which a worker that has already ended no longer shows)
    assert [any("--storage" in a or url in a for a in p.args) for p in processes] == [False, False]
    assert wait_all(processes) == [0, 0], logs(storage.folder / "logs")
    said = logs(storage.folder / "logs")
    assert "CUDA_VISIBLE_DEVICES=2" in said and "CUDA_VISIBLE_DEVICES=3" in said  # each worker says where it trains
    assert "sweep gpus is stopped: this worker takes no trial" in logs(storage.folder / "logs")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: a cuda sweep can run here")
def test_a_worker_without_the_sweep_s_device_stops_at_once_and_takes_no_trial(tmp_path, data_dir, capsys):
    storage = SweepStorage(tmp_path / "runs")
    sweep_spec.create_sweep(tiny_spec(data_dir, name="gpu-only", trials=20, base={"device": "cuda"}), storage)
    assert sweep_cli.main(["work", "gpu-only", "--runs-dir", str(tmp_path / "runs")]) == 1
    out = capsys.readouterr().out
    assert "this worker cannot train the sweep's trials here: device 'cuda' was asked for" in out
    assert "It took no trial" in out and "Traceback" not in out
    assert sweep_spec.load_sweep("gpu-only", storage)[0].get_trials() == []  # the budget is untouched
