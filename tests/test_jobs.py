"""The app's training job: a training process of its own, watched through the run's live log, with state that any
thread may read while it trains; it outlives the process that started it, and a new one finds it again."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cifar_app.config import ConfigError
from cifar_app.data.formats import DataNotFound
from cifar_app.engine.jobs import JobBusy, JobManager
from cifar_app.store.live import LAUNCH_FILE, LIVE_FILE
from cifar_app.store.runs import RunStore
from conftest import ROOT, tiny_config, write_batches

TIMEOUT = 90


@pytest.fixture
def data_dir(tmp_path):
    write_batches(tmp_path / "data")
    return str(tmp_path / "data")


@pytest.fixture
def manager(tmp_path):
    manager = JobManager(RunStore(tmp_path / "runs"), poll_s=0.05)
    yield manager
    assert manager.shutdown(TIMEOUT), "the training process did not end"


def wait_for(condition, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_job_trains_in_a_process_of_its_own_and_saves_the_run(manager, data_dir):
    assert manager.snapshot().status == "idle"
    job_id = manager.start(tiny_config(epochs=2, data_dir=data_dir))
    assert manager.snapshot().pid not in (0, os.getpid())
    assert manager.wait(TIMEOUT)
    snap = manager.snapshot()
    assert (snap.job_id, snap.status, snap.reason) == (job_id, "finished", "")
    assert [e.epoch for e in snap.epochs] == [1, 2]
    assert snap.losses and snap.progress.batch == snap.progress.batches and snap.version > 0
    assert snap.best is not None and snap.final.epoch == 2
    assert any("best test accuracy" in line for line in snap.summary)
    assert len(snap.lines()) == 2 * 3  # the coursework's three lines per epoch
    run = manager.store.get(snap.run_id)
    assert run.status() == "finished" and [r["epoch"] for r in run.metrics()] == [1, 2]
    assert run.has_checkpoint("last") and run.has_checkpoint("best")
    assert (run.path / LIVE_FILE).is_file() and json.loads((run.path / LAUNCH_FILE).read_text())["pid"] == snap.pid


def test_the_job_is_safe_to_read_from_several_threads_while_it_trains(manager, data_dir):
    problems, counts = [], []

    def reader():
        seen_epochs, seen_version, reads = 0, 0, 0
        try:
            while True:
                snap = manager.snapshot()
                reads += 1
                assert [e.epoch for e in snap.epochs] == list(range(1, len(snap.epochs) + 1))
                assert len(snap.epochs) >= seen_epochs and snap.version >= seen_version  # never goes back
                if snap.progress is not None:
                    assert 1 <= snap.progress.batch <= snap.progress.batches
                seen_epochs, seen_version = len(snap.epochs), snap.version
                snap.epochs.clear()  # the reader's copy is its own
                snap.losses.append(None)
                if not snap.running:
                    break
                time.sleep(0.002)  # a tab polls about once a second; four threads polling this fast is harsher
        except Exception as error:  # collected: an assert in a thread would not fail the test
            problems.append(repr(error))
        counts.append(reads)

    manager.start(tiny_config(epochs=3, data_dir=data_dir))
    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join(TIMEOUT)
    assert not problems
    assert len(counts) == 4 and min(counts) > 5
    snap = manager.snapshot()
    assert snap.status == "finished" and [e.epoch for e in snap.epochs] == [1, 2, 3]
    assert None not in snap.losses


def test_stop_ends_the_job_within_a_batch_and_keeps_the_weights(manager, data_dir):
    manager.start(tiny_config(epochs=500, data_dir=data_dir))
    wait_for(lambda: manager.snapshot().progress is not None)
    assert manager.stop()
    assert manager.wait(TIMEOUT)
    snap = manager.snapshot()
    assert snap.status == "stopped" and snap.stop_requested and "stopped by the user" in snap.reason
    run = manager.store.get(snap.run_id)
    assert run.status() == "stopped" and run.has_checkpoint("last")
    assert not manager.stop()  # nothing left to stop


def test_only_one_job_runs_at_a_time(manager, data_dir):
    first = manager.start(tiny_config(epochs=500, data_dir=data_dir))
    with pytest.raises(JobBusy, match="already training"):
        manager.start(tiny_config(epochs=1, data_dir=data_dir))
    assert manager.snapshot().job_id == first and manager.running
    wait_for(lambda: manager.snapshot().progress is not None)
    assert manager.shutdown(TIMEOUT)
    assert manager.start(tiny_config(epochs=1, data_dir=data_dir)) == first + 1
    assert manager.wait(TIMEOUT) and manager.snapshot().status == "finished"
    assert len(manager.store.runs()) == 2


def test_what_can_be_known_at_once_is_refused_at_once(manager, tmp_path):
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        manager.start(tiny_config(epochs=0))
    with pytest.raises(DataNotFound, match="CIFAR-10 was not found"):
        manager.start(tiny_config(data_dir=str(tmp_path / "nothing")))
    assert manager.snapshot().status == "idle"


def test_a_failure_ends_the_job_with_its_reason(manager, data_dir, tmp_path):
    manager.start(tiny_config(optimizer="sgd", lr=10, momentum=0.99, epochs=8, data_dir=data_dir))
    assert manager.wait(TIMEOUT)
    snap = manager.snapshot()
    assert snap.status == "failed" and "diverged" in snap.reason
    assert manager.store.get(snap.run_id).status() == "failed"

    broken = tmp_path / "broken" / "cifar-10-batches-py"  # found (every file is there) but not readable
    write_batches(tmp_path / "broken")
    (broken / "data_batch_3").write_bytes(b"not a pickle")
    manager.start(tiny_config(data_dir=str(tmp_path / "broken")))
    assert manager.wait(TIMEOUT)
    snap = manager.snapshot()
    assert snap.status == "failed" and "data_batch_3 is not a CIFAR-10 batch file" in snap.reason
    assert not (manager.store.root / snap.run_id).exists()  # a run that never began leaves no folder


def test_the_snapshot_shows_the_evaluation_and_stop_interrupts_it(manager, tmp_path):
    write_batches(tmp_path / "big-test", test_per_class=2000)  # 20,000 test images: twenty evaluation batches
    manager.start(tiny_config(epochs=3, data_dir=str(tmp_path / "big-test")))
    wait_for(lambda: manager.snapshot().evaluating is not None or not manager.running)
    snap = manager.snapshot()
    assert (snap.evaluating.split, snap.message) == ("test", "Evaluating epoch 1 of 3 on the test images")
    assert snap.evaluating.done < snap.evaluating.total
    manager.stop()
    assert manager.wait(TIMEOUT)
    snap = manager.snapshot()
    assert snap.status == "stopped" and "while evaluating epoch 1" in snap.reason and snap.epochs == []


def test_a_new_manager_finds_the_running_job_and_can_stop_it(manager, data_dir):
    """A restart of the server makes a new manager: it finds the run the app started and goes on watching it."""
    manager.start(tiny_config(epochs=500, data_dir=data_dir))
    wait_for(lambda: len(manager.snapshot().epochs) >= 1)
    after_restart = JobManager(RunStore(manager.store.root), poll_s=0.05)
    snap = after_restart.snapshot()
    assert snap.running and snap.run_id == manager.snapshot().run_id and snap.config.epochs == 500
    wait_for(lambda: after_restart.snapshot().epochs and after_restart.snapshot().progress is not None)
    with pytest.raises(JobBusy):
        after_restart.start(tiny_config(epochs=1, data_dir=data_dir))
    assert after_restart.stop() and after_restart.wait(TIMEOUT)
    assert after_restart.snapshot().status == "stopped" and manager.wait(TIMEOUT)
    assert manager.snapshot().status == "stopped"


def test_a_killed_server_leaves_the_run_training(tmp_path, data_dir):
    """kill -9 of the process that started a run (the web server) does not interrupt the run."""
    starter = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "tests")!r})
from conftest import tiny_config
from cifar_app.engine.jobs import JobManager
from cifar_app.store.runs import RunStore
manager = JobManager(RunStore({str(tmp_path / "runs")!r}))
manager.start(tiny_config(epochs=40, data_dir={data_dir!r}))
print(manager.snapshot().run_id, flush=True)
time.sleep(600)
"""
    server = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    run_id = server.stdout.readline().strip()
    store = RunStore(tmp_path / "runs")
    wait_for(lambda: (store.root / run_id / "metrics.csv").is_file())
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    run = store.get(run_id)
    wait_for(lambda: run.status() != "running")
    assert run.status() == "finished" and len(run.metrics()) == 40


def test_a_resumed_job_keeps_the_running_loss_of_its_earlier_sessions(manager, data_dir):
    manager.start(tiny_config(epochs=4, data_dir=data_dir, batch_size=16))
    wait_for(lambda: len(manager.snapshot().epochs) >= 2)
    manager.stop()
    assert manager.wait(TIMEOUT)
    first = manager.snapshot()
    run = manager.store.get(first.run_id)
    manager.start(tiny_config(data_dir=data_dir), resume=run)
    assert manager.wait(TIMEOUT)
    snap = manager.snapshot()
    assert snap.status == "finished" and [e.epoch for e in snap.epochs] == [1, 2, 3, 4]
    kept = [p for p in snap.losses if p.position <= first.losses[-1].position]
    assert kept and snap.losses[0] == first.losses[0]  # the chart starts where the run started, not at the resume
    assert snap.origin.startswith("resumed at epoch")
