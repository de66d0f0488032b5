"""The Runs page through Streamlit's AppTest: the table, comparing runs, rename, delete with confirmation,
resume of an interrupted run, fork through the Train page, the model download, and a run that another
process writes. (AppTest does not tick `run_every`; a test reruns the page once the store has moved on.)"""

import ast
import io
import os
import json
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import streamlit as st
import torch
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from cifar_app.engine import speed
from cifar_app.data.formats import CLASSES
from cifar_app.store.runs import RunStore
from cifar_app.events import EpochEvent
from cifar_app.engine.loop import train
from conftest import ROOT, tiny_cifar, tiny_config, write_batches
from ui import common

TIMEOUT = 60


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Tiny CIFAR-10 on disk, a run store, no speed measurement, fresh caches, one torch thread."""
    write_batches(tmp_path / "data")
    monkeypatch.setenv("CIFAR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(speed, "measure_images_per_s", lambda config, device, batches=3, **kwargs: 500.0)
    st.cache_resource.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield RunStore(tmp_path / "runs")
    assert common.job_manager().shutdown(), "the training thread did not stop"
    st.cache_resource.clear()
    torch.set_num_threads(threads)


RUNS, TRAIN, EVALUATE = "app_pages/runs.py", "app_pages/train.py", "app_pages/evaluate.py"


def runs_page() -> AppTest:
    return AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT).switch_page(RUNS).run()


def rerun(at: AppTest, page: str = RUNS) -> AppTest:
    """Run again on `page`, the page the browser shows. AppTest's run() goes back to the page that the last
    `at.switch_page` named, so a test names the page again after the app's own st.switch_page opened another."""
    return at.switch_page(page).run()


def page_title(at: AppTest) -> str:
    return at.title[0].value


def texts(at: AppTest) -> str:
    parts = [e.value for kind in (at.markdown, at.caption, at.info, at.success, at.warning, at.error, at.subheader)
             for e in kind]
    return "\n".join(str(p) for p in parts)


def charts_by_title(at: AppTest) -> dict[str, list[pd.DataFrame]]:
    """Every Vega-Lite chart on the page: its title -> its data sets as frames."""
    found = {}
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        found[spec.get("title", "")] = [convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets]
    return found


def two_runs(store: RunStore):
    data = tiny_cifar()
    fast = train(tiny_config(epochs=2, lr=3e-3, name="fast"), data=data, store=store).run
    slow = train(tiny_config(epochs=2, lr=1e-3, name="slow"), data=data, store=store).run
    return fast, slow


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_page_compares_two_runs_and_shows_what_differs(env):
    fast, slow = two_runs(env)
    at = runs_page()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["name"]) == {"fast", "slow"} and set(table["status"]) == {"finished"}
    assert list(table.set_index("name").loc[["fast", "slow"], "lr"]) == [3e-3, 1e-3]
    assert at.multiselect(key="compare").value == [slow.id, fast.id]  # the two newest runs
    charts = charts_by_title(at)
    for title in ("Test accuracy (%) per epoch", "Training loss per epoch"):
        drawn = pd.concat(charts[title])
        assert set(drawn["run"]) == {"fast", "slow"}
        assert sorted(drawn.groupby("run")["epoch"].apply(list).tolist()) == [[1, 2], [1, 2]]
    (differences,) = at.table
    assert differences.value.loc["lr"].tolist() == ["0.001", "0.003"]
    assert "picked **by test** accuracy" in texts(at) and "flatters the result" in texts(at)
    at.multiselect(key="compare").set_value([fast.id])
    rerun(at)
    assert "Pick a second run" in texts(at) and not at.table


def test_the_table_shows_a_few_columns_and_blanks_for_figures_not_known_yet(env):
    env.create(tiny_config(name="no epoch yet"), {"device": "cpu"}, name="no epoch yet")
    at = runs_page()
    table = at.dataframe[0]
    config = json.loads(table.proto.columns)
    shown = [c for c in table.proto.column_order if not config[c].get("hidden")]
    assert [config[c]["label"] for c in shown] == [
        "name", "status", "progress", "epochs", "labels", "best test", "best epoch", "final test", "time"]
    assert set(table.value.columns) - set(shown) >= {"lr", "optimizer", "schedule", "started", "id"}  # in the menu
    assert table.value["best_test_acc"].isna().all()
    assert table.proto.HasField("placeholder") and table.proto.placeholder == ""  # shown blank, not "None"


def test_rename_and_delete_with_confirmation(env):
    fast, slow = two_runs(env)
    at = runs_page()
    at.selectbox(key="run_pick").set_value(fast.id)
    rerun(at)
    at.text_input(key=f"rename_{fast.id}").set_value("fast lr")
    rerun(at)
    at.button(key="rename").click()
    rerun(at)
    assert fast.name == "fast lr" and "fast lr" in set(at.dataframe[0].value["name"])
    at.button(key="delete").click()
    rerun(at)
    assert "This cannot be undone" in texts(at) and fast.path.exists()
    at.button(key="delete_cancel").click()
    rerun(at)
    assert fast.path.exists() and not at.button(key="delete").disabled
    at.button(key="delete").click()
    rerun(at)
    at.button(key="delete_confirm").click()
    rerun(at)
    assert not fast.path.exists() and [r.id for r in env.runs()] == [slow.id]
    assert list(at.dataframe[0].value["name"]) == ["slow"]
    assert at.multiselect(key="compare").value == [slow.id] and not at.exception


def test_an_interrupted_run_resumes_from_the_page_to_its_last_epoch(env):
    stop = threading.Event()
    run = train(tiny_config(epochs=3, name="victim"), data=tiny_cifar(), store=env, stop=stop,
                on_event=lambda event: stop.set() if isinstance(event, EpochEvent) else None).run
    run.update_meta(status="running", pid=dead_pid())  # its process was killed after epoch 1
    at = runs_page()
    assert at.dataframe[0].value["status"].tolist() == ["interrupted"]
    assert "Continues from its last checkpoint at epoch 2" in texts(at)
    at.button(key="resume").click()
    rerun(at)  # Resume starts the job and opens the Train page
    assert page_title(at) == "Train"
    manager = common.job_manager()
    assert manager.wait(TIMEOUT)
    rerun(at, TRAIN)
    snap = manager.snapshot()
    assert (snap.status, snap.run_id, [e.epoch for e in snap.epochs]) == ("finished", run.id, [1, 2, 3])
    assert "resumed at epoch 2" in texts(at) and "The run finished 3 epochs" in texts(at)
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3] and run.status() == "finished"
    at.switch_page("app_pages/runs.py").run()
    assert at.dataframe[0].value[["status", "epochs"]].values.tolist() == [["finished", "3/3"]]
    assert "Cannot be resumed: it finished all its epochs" in texts(at) and at.button(key="resume").disabled


def test_the_download_loads_with_plain_torch_and_the_lines_shown(env, tmp_path, monkeypatch):
    fast, _ = two_runs(env)
    deferred = {}  # the page's download makes its file when clicked: keep the function a click would call
    add_deferred = MediaFileManager.add_deferred

    def keep(self, data_callable, *args, **kwargs):
        file_id = add_deferred(self, data_callable, *args, **kwargs)
        deferred[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    at = runs_page()
    at.selectbox(key="run_pick").set_value(fast.id)
    rerun(at)
    button = at.get("download_button")[0]
    assert button.proto.label == "Download the model"
    data = deferred[button.proto.deferred_file_id]()  # what a click in the browser runs
    saved = torch.load(io.BytesIO(data), weights_only=True)
    assert saved["format"] == "cifar10-studio-model" and saved["config"]["lr"] == 3e-3
    (snippet,) = [c.value for c in at.code if "torch.load" in c.value]
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{fast.id}-best.pt").write_bytes(data)
    shown = io.StringIO()
    monkeypatch.setattr(sys, "stdout", shown)
    exec(snippet, {})  # the page's lines, as a user would paste them
    monkeypatch.undo()
    printed = shown.getvalue().splitlines()
    assert printed[0].startswith(f"{saved['epoch']} ")  # epoch, test accuracy, classes
    predicted = ast.literal_eval(printed[-1])
    assert len(predicted) == 4 and set(predicted) <= set(CLASSES)


def test_fork_fills_the_train_form_and_starts_a_branch(env):
    fast, _ = two_runs(env)
    at = runs_page()
    at.selectbox(key="run_pick").set_value(fast.id)
    rerun(at)
    at.radio(key=f"fork_which_{fast.id}").set_value("last")
    at.button(key="fork").click()
    rerun(at)  # the Train page, with the run's hyperparameters and the fork's source
    assert page_title(at) == "Train"
    assert "Fork of fast" in texts(at) and "after epoch 2" in texts(at)
    assert at.select_slider(key="cfg_lr").value == 3e-3 and at.select_slider(key="cfg_width").value == 8
    assert at.slider(key="cfg_epochs").value == 3 and at.slider(key="cfg_blocks").disabled
    assert at.button(key="start").label == "Start the fork" and not at.button(key="start").disabled
    at.segmented_control(key="preset").set_value("seed")  # a preset fills in all but the network's shape
    rerun(at, TRAIN)
    assert at.select_slider(key="cfg_width").value == 8 and at.slider(key="cfg_blocks").value == 3
    assert at.select_slider(key="cfg_lr").value == 1e-3 and at.slider(key="cfg_epochs").value == 25
    for key, value in {"epochs": 3, "batch_size": 32, "weight_decay": 0.0}.items():
        (at.slider if key == "epochs" else at.select_slider)(key=f"cfg_{key}").set_value(value)
    rerun(at, TRAIN)
    at.button(key="start").click()
    rerun(at, TRAIN)
    manager = common.job_manager()
    assert manager.wait(TIMEOUT)
    rerun(at, TRAIN)
    snap = manager.snapshot()
    assert snap.status == "finished" and snap.origin == "fork of fast at epoch 2 (last)"
    child = env.get(snap.run_id)
    assert child.parent() == (fast.id, 2, "last") and child.config().lr == 1e-3
    assert [r["epoch"] for r in child.metrics()] == [3] and "Fork of" not in texts(at)
    at.switch_page("app_pages/runs.py").run()
    at.multiselect(key="compare").set_value([child.id, fast.id])
    rerun(at)
    drawn = pd.concat(charts_by_title(at)["Test accuracy (%) per epoch"])
    assert drawn[drawn["run"] == "fast-fork"]["epoch"].min() == 2  # drawn from its branch point
    assert "fast @ epoch 2 (last)" in at.table[0].value.loc["forked from"].tolist()


def test_a_run_from_another_process_appears_on_the_runs_and_train_pages(env, tmp_path):
    at = runs_page()
    assert "No runs yet" in texts(at)
    command = [sys.executable, "-m", "cifar_app.train", "--data-dir", str(tmp_path / "data"), "--runs-dir",
               str(env.root), "--blocks", "2", "--width", "4", "--k", "1", "--epochs", "200", "--batch-size", "10",
               "--device", "cpu", "--name", "terminal", "--quiet"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (env.runs() and env.runs()[0].metrics()):
            assert time.monotonic() < deadline and process.poll() is None, "the CLI run never finished an epoch"
            time.sleep(0.1)
        rerun(at)
        table = at.dataframe[0].value
        assert table[["name", "status"]].values.tolist() == [["terminal", "running"]]
        assert "Cannot be resumed: it is still training" in texts(at)
        at.switch_page("app_pages/train.py").run()
        assert "Also training elsewhere" in texts(at)
        assert any("terminal" in p.proto.text and "of 200" in p.proto.text for p in at.get("progress"))
    finally:
        process.kill()
        process.wait()
    at.switch_page("app_pages/runs.py").run()
    assert at.dataframe[0].value["status"].tolist() == ["interrupted"]
    assert "Continues from its last checkpoint" in texts(at)


def test_a_link_with_a_run_opens_evaluate_on_that_run(env):
    fast, slow = two_runs(env)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.query_params["run"] = fast.id  # as the Runs page's "Evaluate this run" link sets it
    at.switch_page("app_pages/evaluate.py").run()
    assert at.selectbox(key="evaluate_model").value == fast.id and not at.exception
    assert "run" not in at.query_params  # picked once: the user may choose another model afterwards
    rerun(at, EVALUATE)
    assert at.selectbox(key="evaluate_model").value == fast.id


def test_resume_on_another_copy_of_the_data_is_refused_with_a_sentence(env, tmp_path):
    from conftest import write_folder

    stop = threading.Event()
    run = train(tiny_config(epochs=3, name="victim"), data=tiny_cifar(), store=env, stop=stop,
                on_event=lambda event: stop.set() if isinstance(event, EpochEvent) else None).run
    write_folder(tmp_path / "data" / "pngs")  # the same images, in class order: another copy under the data root
    at = runs_page()
    at.selectbox(key="data_dir").set_value(str(tmp_path / "data" / "pngs")).run()
    at.button(key="resume").click().run()
    assert page_title(at) == "Runs" and not common.job_manager().running
    assert "Not resumed: victim cannot be resumed on this data: it trained on other data" in texts(at)
    assert run.status() == "stopped"
