"""Runs side by side and their lineage: curves on shared axes, what differs, resume and fork checks, the
comparison chart, runs training elsewhere, and the background job resuming and forking."""

import subprocess
import sys
import threading

import pandas as pd
import pytest
import torch

from cifar_app.analysis import compare
from ui.charts import training as charts
from cifar_app.config import ConfigError
from cifar_app.engine.jobs import JobManager, NotResumable
from cifar_app.store.lineage import branch_epoch, checkpoint_position, fork_problems, fork_warnings
from cifar_app.store.report import runs_table
from cifar_app.store.liveness import process_start
from cifar_app.store.runs import RunStore
from cifar_app.events import EpochEvent, ResumeEvent
from cifar_app.engine.loop import train
from cifar_app.store.live import LIVE_FILE, read_events
from conftest import tiny_config, write_batches


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """Three finished runs: a parent, a run with another learning rate and a validation split, and a fork of
    the parent from its best epoch. Trained once for the module (a few seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from conftest import tiny_cifar

    data = tiny_cifar()
    store = RunStore(tmp_path_factory.mktemp("runs"))
    parent = train(tiny_config(epochs=2, name="parent"), data=data, store=store).run
    other = train(tiny_config(epochs=3, lr=1e-3, val_size=50, name="other"), data=data, store=store).run
    fork = train(tiny_config(epochs=4, lr=1e-3, name="fork"), data=data, store=store, fork=(parent, "best")).run
    torch.set_num_threads(threads)
    return store, parent, other, fork


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_curves_put_every_run_on_shared_epochs_and_start_a_fork_at_its_branch(family):
    store, parent, other, fork = family
    curves, branches = compare.curves([parent, other, fork], store)
    by_run = {name: group for name, group in curves.groupby("run")}
    assert list(by_run["parent"]["epoch"]) == [1, 2] and list(by_run["other"]["epoch"]) == [1, 2, 3]
    branch = branch_epoch(parent, "best")
    # the fork's line starts at the parent's value at the branch epoch, then goes on with its own epochs
    assert list(by_run["fork"]["epoch"]) == [branch, *range(branch + 1, 5)]
    at_branch = next(r for r in parent.metrics() if r["epoch"] == branch)
    assert by_run["fork"]["test_acc"].iloc[0] == at_branch["test_acc"]
    assert by_run["other"]["val_acc"].notna().all() and by_run["parent"]["val_acc"].isna().all()
    assert branches[["run", "parent", "checkpoint", "epoch"]].values.tolist() == [["fork", "parent", "best", branch]]


def test_a_fork_whose_parent_was_deleted_still_marks_its_branch(family, tmp_path):
    store, parent, _, fork = family
    lonely = RunStore(tmp_path)  # a store that holds the fork's folder but not its parent
    (tmp_path / fork.id).symlink_to(fork.path)
    curves, branches = compare.curves([lonely.get(fork.id)], lonely)
    assert "(deleted)" in branches["parent"].iloc[0] and pd.isna(branches["test_acc"].iloc[0])
    assert curves["test_acc"].iloc[0] != curves["test_acc"].iloc[0]  # NaN: the parent's value is unknown


def test_config_differences_show_only_what_differs(family):
    store, parent, other, fork = family
    table = compare.config_differences([parent, other, fork], store=store)
    assert list(table.columns) == ["parent", "other", "fork"]
    assert set(table.index) == {"lr", "epochs", "val_size", "forked from"}
    assert table.loc["lr"].tolist() == ["0.003", "0.001", "0.001"]
    assert table.loc["forked from", "fork"].startswith("parent @ epoch")
    assert compare.config_differences([parent, parent], store=store).empty
    assert compare.config_differences([parent]).empty


def test_run_labels_tell_runs_with_the_same_name_apart(family):
    store, parent, other, _ = family
    store.rename(other, "parent")
    try:
        labels = compare.run_labels([parent, other])
    finally:
        store.rename(other, "other")
    assert len(set(labels.values())) == 2 and labels[other.id] == f"parent ({other.id})"


def test_the_table_frame_has_a_row_per_run_and_names_a_fork_parent(family):
    store, parent, other, fork = family
    rows, unreadable = compare.table_rows(store.runs())
    frame = compare.table_frame(rows, compare.run_labels(store.runs()))
    assert list(frame.columns) == compare.TABLE_COLUMNS and unreadable == {}
    assert frame["progress"].tolist() == [1.0, 1.0, 1.0]
    by_name = frame.set_index("name")
    assert by_name.loc["fork", "forked_from"] == f"parent @ {branch_epoch(parent, 'best')}"
    assert by_name.loc["other", "best_by"] == "validation" and by_name.loc["parent", "best_by"] == "test"
    assert by_name.loc["fork", "epochs"] == "4/4"


def test_an_unreadable_run_folder_is_left_out_with_a_reason(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    rows, unreadable = compare.table_rows(RunStore(tmp_path).runs())
    assert rows == [] and "JSONDecodeError" in unreadable["broken"]


def test_the_comparison_chart_draws_a_line_per_run_and_marks_the_branch(family):
    store, parent, other, fork = family
    curves, branches = compare.curves([parent, other, fork], store)
    spec = charts.compare_chart(curves, "test_acc", branches, total_epochs=4).to_dict()
    lines, rule, diamond = spec["layer"]
    data = spec["datasets"][lines["data"]["name"]]
    assert {row["run"] for row in data} == {"parent", "other", "fork"}
    assert lines["encoding"]["color"]["scale"]["domain"] == ["parent", "other", "fork"]
    assert lines["encoding"]["x"]["scale"]["domain"] == [1, 4]
    assert rule["mark"]["type"] == "rule" and diamond["mark"]["shape"] == "diamond"
    marked = spec["datasets"][diamond["data"]["name"]]
    assert marked[0]["epoch"] == branch_epoch(parent, "best") and "forked from parent" in marked[0]["branch"]
    loss = charts.compare_chart(curves, "train_loss").to_dict()
    assert loss["layer"][0]["encoding"]["y"]["title"] == "training loss"
    assert len(charts.compare_chart(curves[curves["run"] != "fork"], "val_acc").to_dict()["layer"]) == 1


def test_resume_and_fork_are_refused_with_a_reason(family, tmp_path):
    store, parent, other, fork = family
    assert "finished all its epochs" in parent.resume_problem()
    live = RunStore(tmp_path).create(tiny_config(), {}, name="live")
    assert "still training" in live.resume_problem()
    live.update_meta(pid=dead_pid())
    assert live.status() == "interrupted" and "before its first checkpoint" in live.resume_problem()
    assert fork_problems(parent, "best", tiny_config(epochs=4)) == []
    problems = fork_problems(parent, "last", tiny_config(epochs=2, width=16))
    assert any("blocks, K and width must stay" in p and "width 8 -> 16" in p for p in problems)
    assert any("set more than 2 epochs" in p for p in problems)
    assert "no readable best checkpoint" in fork_problems(live, "best", tiny_config())[0]
    assert fork_warnings(parent, tiny_config(val_size=40)) and not fork_warnings(parent, tiny_config(lr=1e-2))
    assert checkpoint_position(parent, "last") == (2, 0)


def test_runs_training_in_another_process_are_found_cheaply(tmp_path):
    store = RunStore(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        elsewhere = store.create(tiny_config(epochs=4), {}, name="elsewhere")
        elsewhere.update_meta(pid=sleeper.pid, pid_start=process_start(sleeper.pid),
                              progress={"epoch": 2, "batch": 3, "batches": 6})
        here = store.create(tiny_config(), {}, name="here")  # this process: the dashboard's own job
        before = store.signature()
        assert {r.name for r in store.running()} == {"elsewhere", "here"}
        assert [r.name for r in compare.running_elsewhere(store)] == ["elsewhere"]
        assert elsewhere.progress() == pytest.approx((1 + 3 / 6) / 4)
        assert "epoch 2 of 4" in compare.elsewhere_line(elsewhere)
        elsewhere.append_metrics({"epoch": 1, "train_loss": 1.0, "train_acc": 50.0, "test_acc": 40.0})
        assert store.signature() != before
        assert here.is_elsewhere() is False
    finally:
        sleeper.kill()
        sleeper.wait()
    assert compare.running_elsewhere(store) == []


def test_the_job_resumes_an_interrupted_run_with_its_history(tiny_data, tmp_path):
    write_batches(tmp_path / "data")  # the same images as tiny_data, on disk for the job's training process
    data_dir = str(tmp_path / "data")
    store = RunStore(tmp_path / "runs")
    reference = train(tiny_config(epochs=3, name="uninterrupted"), data=tiny_data, store=store).run
    stop = threading.Event()
    run = train(tiny_config(epochs=3, name="crashed", data_dir=data_dir), data=tiny_data, store=store, stop=stop,
                on_event=lambda event: stop.set() if isinstance(event, EpochEvent) else None).run
    run.update_meta(status="running", pid=dead_pid())  # as if its process had been killed after epoch 1
    assert run.status() == "interrupted" and run.resume_problem() is None
    manager = JobManager(store, poll_s=0.05)
    manager.start(tiny_config(epochs=99, lr=1.0, data_dir=data_dir), resume=run)  # the run's own config wins
    assert manager.snapshot().run_id == run.id and manager.snapshot().origin == "resumed"
    assert manager.wait(60)
    snap = manager.snapshot()
    assert snap.status == "finished" and [e.epoch for e in snap.epochs] == [1, 2, 3]
    assert snap.origin == "resumed at epoch 2" and snap.config.epochs == 3 and snap.config.lr == 3e-3
    resumed = [event for _, _, event in read_events(run.path / LIVE_FILE)[0] if isinstance(event, ResumeEvent)]
    assert [(e.epoch, [h.epoch for h in e.history]) for e in resumed] == [(1, [1])]
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3] and run.status() == "finished"
    # the resumed run ends where the uninterrupted one did
    assert run.metrics()[-1]["train_loss"] == pytest.approx(reference.metrics()[-1]["train_loss"], rel=1e-4)
    with pytest.raises(NotResumable, match="finished all its epochs"):
        manager.start(tiny_config(data_dir=data_dir), resume=run)
    with pytest.raises(ConfigError, match="set more than 3 epochs"):
        manager.start(tiny_config(epochs=3, data_dir=data_dir), fork=(run, "last"))


def test_the_job_forks_a_run_and_names_where_it_came_from(family, tmp_path):
    store, parent, _, _ = family
    write_batches(tmp_path / "data")  # the images the family trained on, on disk for the job's process
    manager = JobManager(store, poll_s=0.05)
    manager.start(tiny_config(epochs=3, lr=1e-3, name="branch", data_dir=str(tmp_path / "data")), fork=(parent, "last"))
    assert manager.wait(60)
    snap = manager.snapshot()
    assert snap.status == "finished" and snap.origin == "fork of parent at epoch 2 (last)"
    child = store.get(snap.run_id)
    assert child.parent() == (parent.id, 2, "last") and [r["epoch"] for r in child.metrics()] == [3]
    store.delete(child)


def test_the_cli_forks_from_the_parent_recipe(family, tmp_path):
    from cifar_app.engine.cli import main
    from conftest import write_batches

    store, parent, _, _ = family
    write_batches(tmp_path / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["--fork", f"{parent.id}:best", "--epochs", "3", "--runs-dir", str(store.root), "--data-dir",
                     str(tmp_path / "data"), "--quiet"])
        refused = main(["--fork", parent.id, "--width", "16", "--runs-dir", str(store.root), "--data-dir",
                        str(tmp_path / "data"), "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0 and refused == 1
    child = next(r for r in store.runs() if r.name == "parent-fork")
    assert child.config().width == 8 and child.config().lr == parent.config().lr  # the parent's recipe
    assert child.parent()[0] == parent.id
    store.delete(child)
    assert {r["name"] for r in runs_table(store)} == {"parent", "other", "fork"}
