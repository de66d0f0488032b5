"""The run store: atomic writes, statuses, resume after SIGKILL, fork, checkpoints in and out."""

import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from cifar_app.atomic import atomic_write_json, atomic_write_text
from cifar_app.store.checkpoints import CheckpointError, export_bytes, load_model_file, load_run_model
from cifar_app.store.report import markdown, run_row, runs_table
from cifar_app.store.liveness import process_alive, process_start
from cifar_app.store.runs import Run, RunStore
from cifar_app.engine.cli import main
from cifar_app.engine.loop import train
from conftest import ROOT, tiny_config, write_batches


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "epoch\n1\n")

    class Boom(Exception):
        pass

    def half_then_crash(f):
        f.write("epoch\n1\n2")
        raise Boom

    from cifar_app import atomic

    with pytest.raises(Boom):
        atomic._atomic_write(target, half_then_crash, binary=False)
    assert target.read_text() == "epoch\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary file left behind


def test_the_runs_table_covers_every_status(tmp_path, tiny_data):
    store = RunStore(tmp_path)
    finished = train(tiny_config(epochs=1, name="done"), data=tiny_data, store=store).run
    failed = train(tiny_config(optimizer="sgd", lr=10, momentum=0.99, epochs=8, name="nan"), data=tiny_data,
                   store=store).run
    stopped = train(tiny_config(epochs=1, name="halted"), data=tiny_data, store=store,
                    stop=_set_event()).run
    # a run whose process died: status still "running" but its pid is gone
    dead = store.create(tiny_config(name="crashed"), {"device": "cpu"}, name="crashed")
    dead.update_meta(pid=_dead_pid())
    # a run still alive in this process
    live = store.create(tiny_config(name="live"), {"device": "cpu"}, name="live")
    statuses = {row["name"]: row["status"] for row in runs_table(store)}
    assert statuses == {"done": "finished", "nan": "failed", "halted": "stopped", "crashed": "interrupted",
                        "live": "running"}
    rows = {row["name"]: row for row in runs_table(store)}
    assert rows["done"]["best_test_acc"] is not None and rows["done"]["epochs"] == "1/1"
    assert "diverged" in rows["nan"]["reason"]
    assert "| done |" in markdown(list(rows.values()))
    assert {finished.id, failed.id, stopped.id, dead.id, live.id} == {r.id for r in store.runs()}


def _set_event():
    import threading

    event = threading.Event()
    event.set()
    return event


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_rename_and_delete(trained_run):
    store, run = RunStore(trained_run.path.parent), trained_run
    store.rename(run, "  my best  ")
    assert run.name == "my best"
    live = store.create(tiny_config(), {}, name="live")
    with pytest.raises(RuntimeError, match="still training"):
        store.delete(live)
    store.delete(run)
    assert [r.id for r in store.runs()] == [live.id]


def test_fork_from_a_saved_epoch_with_a_new_learning_rate(tmp_path, tiny_data):
    store = RunStore(tmp_path)
    parent = train(tiny_config(epochs=2, name="parent"), data=tiny_data, store=store).run
    child = train(tiny_config(epochs=4, lr=1e-3, name="child"), data=tiny_data, store=store, fork=(parent, "last")).run
    assert [r["epoch"] for r in child.metrics()] == [3, 4]
    record = child.config_record()
    assert (record["parent"], record["parent_epoch"]) == (parent.id, 2)
    assert child.config().lr == 1e-3
    # the child starts from the parent's weights, not from scratch
    assert child.metrics()[0]["train_loss"] < parent.metrics()[0]["train_loss"]


def test_export_loads_with_plain_torch_and_back(tmp_path, trained_run):
    run = trained_run
    data = export_bytes(run, "best")
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    plain = torch.load(path, weights_only=True)
    assert plain["format"] == "cifar10-studio-model" and plain["config"]["width"] == 8
    loaded = load_model_file(data, name="model.pt")
    reference = load_run_model(run, "best")
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), reference.model(x))


def test_bad_checkpoints_are_refused_with_a_message(tmp_path, trained_run):
    run = trained_run
    good = export_bytes(run)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model_file(good[: len(good) // 2], name="cut.pt")
    with pytest.raises(CheckpointError, match="empty"):
        load_model_file(b"", name="empty.pt")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model_file(b"this is a text file", name="notes.txt")
    foreign = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a CIFAR-10 Studio model"):
        load_model_file(foreign.read_bytes(), name="resnet.pt")
    payload = torch.load(io.BytesIO(good), weights_only=True)
    payload["config"]["width"] = 16  # the weights are for width 8
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, mismatched)
    with pytest.raises(CheckpointError, match="do not match the network"):
        load_model_file(mismatched.read_bytes(), name="mismatched.pt")
    # a pickle that would run code is refused by weights_only loading
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"config": {}, "state_dict": {}, "x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model_file(evil.read_bytes(), name="evil.pt")


def test_a_cli_run_records_how_and_on_what_it_trained(tmp_path, capsys):
    write_batches(tmp_path / "data")
    store = RunStore(tmp_path / "runs")
    assert main(["--data-dir", str(tmp_path / "data"), "--runs-dir", str(store.root), "--blocks", "2", "--width", "8",
                 "--k", "2", "--epochs", "1", "--batch-size", "50", "--device", "cpu", "--name", "elsewhere"]) == 0
    (run,) = store.runs()
    assert run.name == "elsewhere" and run.status() == "finished" and len(run.metrics()) == 1
    record = json.loads((run.path / "config.json").read_text())
    assert record["versions"]["torch"] == torch.__version__ and record["device"].startswith("CPU")
    assert record["data_source"].endswith(str(tmp_path / "data" / "cifar-10-batches-py"))


def test_a_model_saved_mid_anneal_predicts_at_its_temperature(tmp_path, tiny_data):
    config = tiny_config(epochs=2, attn_temperature=30.0, attn_anneal_epochs=10)
    run = train(config, data=tiny_data, store=RunStore(tmp_path)).run
    expected = 30.0 + (1.0 - 30.0) * 0.1  # the second epoch (index 1) of a 10-epoch anneal
    assert load_run_model(run, "last").model.temperature() == pytest.approx(expected)
    assert load_model_file(export_bytes(run, "last")).model.temperature() == pytest.approx(expected)


def test_a_reused_pid_or_a_silent_heartbeat_reads_interrupted_and_the_run_can_be_resumed_and_deleted(tmp_path):
    store = RunStore(tmp_path)
    # after a container restart the dead run's pid can belong to a live process: here, this test's own
    reused = store.create(tiny_config(name="reused"), {}, name="reused")
    reused.update_meta(pid=os.getpid(), pid_start="12345")  # the process that wrote it started at another time
    assert reused.status() == "interrupted"
    silent = store.create(tiny_config(name="silent"), {}, name="silent")
    silent.update_meta(heartbeat=time.time() - 3600)  # alive pid, but no sign of life for an hour
    assert silent.status() == "interrupted"
    assert "ended before its first checkpoint" in reused.resume_problem()  # resumable but for its checkpoint
    store.delete(reused)
    store.delete(silent)
    assert store.runs() == []
    alive = store.create(tiny_config(name="alive"), {}, name="alive")
    assert alive.status() == "running"


def test_a_rename_is_never_undone_by_the_heartbeat(tmp_path):
    run = RunStore(tmp_path).create(tiny_config(), {}, name="before")
    done = threading.Event()

    def heartbeat():
        batch = 0
        while not done.is_set():
            batch += 1
            run.heartbeat(progress={"epoch": 1, "batch": batch, "batches": 10**6})

    beating = threading.Thread(target=heartbeat)
    beating.start()
    try:
        for i in range(100):
            RunStore(tmp_path).rename(run, f"name {i}")
            assert run.name == f"name {i}"
    finally:
        done.set()
        beating.join()
    assert run.name == "name 99" and run.meta()["progress"]["batch"] > 1


def test_a_process_that_exited_unreaped_is_not_alive():
    """A zombie keeps its pid until its parent waits for it: the pid alone would call it alive."""
    child = subprocess.Popen(["sleep", "0.1"])
    started = process_start(child.pid)
    assert process_alive(child.pid, started)
    time.sleep(0.5)  # exited, not yet waited for
    assert not process_alive(child.pid, started)
    child.wait()
    assert not process_alive(child.pid, started)


def test_run_files_follow_the_user_s_umask(tmp_path):
    """Shared (umask 022: readable by the other users of a shared runs folder, not mkstemp's private 0600) or
    private (umask 077: a run's files are the user's alone), as the user chose."""
    modes = []
    for umask in (0o022, 0o077):
        before = os.umask(umask)
        try:
            atomic_write_json(tmp_path / f"meta-{umask:o}.json", {"status": "running"})
        finally:
            os.umask(before)
        modes.append((tmp_path / f"meta-{umask:o}.json").stat().st_mode & 0o777)
    assert modes == [0o644, 0o600]


def test_the_runs_page_and_a_sweep_judge_a_remote_run_by_the_same_rule(tmp_path):
    """One rule (store.liveness) for both: a run written from another host is alive while its heartbeat is fresh
    and dead once it is older than the allowance, whether the Runs page or a sweep's claim asks."""
    import optuna

    from cifar_app.store.liveness import STALE_AFTER_S
    from cifar_app.sweeps.claims import dead_reason

    store = RunStore(tmp_path)
    run = store.create(tiny_config(name="remote"), {}, name="remote")
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    trial.set_user_attr("worker", {"host": "another-host", "pid": 4242, "pid_start": "1"})
    trial.set_user_attr("run_id", run.id)
    verdicts = []
    for age in (5.0, STALE_AFTER_S / 2, STALE_AFTER_S + 5):
        run.update_meta(host="another-host", pid=4242, pid_start="1", heartbeat=time.time() - age)
        frozen = study._storage.get_trial(trial._trial_id)
        verdicts.append((run.status(), dead_reason(frozen, store) is not None))
    assert verdicts == [("running", False), ("running", False), ("interrupted", True)]
