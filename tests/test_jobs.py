"""The background training job: one thread, a stop flag, and state that any thread may read while it trains."""

import threading
import time

import pytest
import torch

from cifar_app.engine import jobs
from cifar_app.config import ConfigError
from cifar_app.data.formats import DataNotFound
from cifar_app.engine.jobs import JobBusy, JobManager
from cifar_app.store.runs import RunStore
from conftest import tiny_cifar, tiny_config


@pytest.fixture
def manager(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads, and they spin when the cores are shared
    manager = JobManager(RunStore(tmp_path / "runs"), report_interval_s=0)
    yield manager
    assert manager.shutdown(), "the training thread did not end"
    torch.set_num_threads(threads)


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_job_trains_in_the_background_and_saves_the_run(manager, tiny_data):
    assert manager.snapshot().status == "idle"
    job_id = manager.start(tiny_config(epochs=2), data=tiny_data)
    assert manager.wait(60)
    snap = manager.snapshot()
    assert (snap.job_id, snap.status, snap.reason) == (job_id, "finished", "")
    assert [e.epoch for e in snap.epochs] == [1, 2]
    assert snap.losses and snap.progress.batch == snap.progress.batches
    assert snap.best is not None and snap.final.epoch == 2
    assert any("best test accuracy" in line for line in snap.summary)
    assert len(snap.lines()) == 2 * 3  # the coursework's three lines per epoch
    run = manager.store.get(snap.run_id)
    assert run.status() == "finished" and [r["epoch"] for r in run.metrics()] == [1, 2]
    assert run.has_checkpoint("last") and run.has_checkpoint("best")


def test_the_job_is_safe_to_read_from_several_threads_while_it_trains(manager, tiny_data):
    problems, counts = [], []

    def reader():
        seen_epochs, seen_losses, reads = 0, 0, 0
        try:
            while True:
                snap = manager.snapshot()
                reads += 1
                assert [e.epoch for e in snap.epochs] == list(range(1, len(snap.epochs) + 1))
                assert len(snap.epochs) >= seen_epochs  # never goes back
                assert len(snap.losses) >= min(seen_losses, jobs.MAX_LOSS_POINTS // 2)
                if snap.progress is not None:
                    assert 1 <= snap.progress.batch <= snap.progress.batches
                seen_epochs, seen_losses = len(snap.epochs), len(snap.losses)
                snap.epochs.clear()  # the reader's copy is its own
                snap.losses.append(None)
                if not snap.running:
                    break
                time.sleep(0.002)  # a tab polls about once a second; four threads polling this fast is harsher
        except Exception as error:  # collected: an assert in a thread would not fail the test
            problems.append(repr(error))
        counts.append(reads)

    manager.start(tiny_config(epochs=3), data=tiny_data)
    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join(90)
    assert not problems
    assert len(counts) == 4 and min(counts) > 5
    snap = manager.snapshot()
    assert snap.status == "finished" and [e.epoch for e in snap.epochs] == [1, 2, 3]
    assert None not in snap.losses


def test_stop_ends_the_job_within_a_batch_and_keeps_the_weights(manager, tiny_data):
    manager.start(tiny_config(epochs=200), data=tiny_data)
    wait_for(lambda: manager.snapshot().progress is not None)
    assert manager.stop()
    assert manager.wait(30)
    snap = manager.snapshot()
    assert snap.status == "stopped" and snap.stop_requested and "stopped by the user" in snap.reason
    run = manager.store.get(snap.run_id)
    assert run.status() == "stopped" and run.has_checkpoint("last")
    assert not manager.stop()  # nothing left to stop


def test_only_one_job_runs_at_a_time(manager, tiny_data):
    first = manager.start(tiny_config(epochs=200), data=tiny_data)
    with pytest.raises(JobBusy, match="already training"):
        manager.start(tiny_config(epochs=1), data=tiny_data)
    assert manager.snapshot().job_id == first and manager.running
    manager.shutdown()
    assert manager.start(tiny_config(epochs=1), data=tiny_data) == first + 1
    assert manager.wait(60) and manager.snapshot().status == "finished"


def test_what_can_be_known_at_once_is_refused_at_once(manager, tmp_path):
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        manager.start(tiny_config(epochs=0))
    with pytest.raises(DataNotFound, match="CIFAR-10 was not found"):
        manager.start(tiny_config(data_dir=str(tmp_path / "nothing")))
    assert manager.snapshot().status == "idle"


def test_failures_in_the_thread_end_the_job_with_a_reason(manager, tiny_data, monkeypatch):
    manager.start(tiny_config(optimizer="sgd", lr=10, momentum=0.99, epochs=8), data=tiny_data)
    assert manager.wait(60)
    snap = manager.snapshot()
    assert snap.status == "failed" and "diverged" in snap.reason
    assert manager.store.get(snap.run_id).status() == "failed"

    def broken(*args, **kwargs):
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(jobs, "train", broken)
    manager.start(tiny_config(), data=tiny_data)
    assert manager.wait(10)
    assert manager.snapshot().status == "failed"
    assert manager.snapshot().reason == "RuntimeError: the GPU caught fire"


def test_the_snapshot_shows_the_evaluation_and_stop_interrupts_it(manager):
    data = tiny_cifar(test_per_class=110)  # two evaluation batches
    seen = []
    original = manager._on_event

    def on_event(job, event):  # the user presses Stop while the page shows the test pass
        original(job, event)
        snap = manager.snapshot()
        if snap.evaluating is not None and snap.evaluating.done < snap.evaluating.total:
            seen.append((snap.evaluating.split, snap.evaluating.done, snap.message))
            manager.stop()

    manager._on_event = on_event
    manager.start(tiny_config(epochs=3), data=data)
    assert manager.wait(60)
    snap = manager.snapshot()
    assert seen[0] == ("test", 1000, "Evaluating epoch 1 of 3 on the test images")
    assert snap.status == "stopped" and "while evaluating epoch 1" in snap.reason and snap.epochs == []
