"""The Sweeps page through AppTest: the form refuses an impossible search before anything starts, Start creates
the study and hands it to worker processes (here a stand-in records the call, and the test trains the trials
in its own process, as a worker would), the live view shows the trials, the best trial's test accuracy and the
charts (also when `epochs` is searched), links a trial to its run both ways, stops and goes on (once, however
many tabs or apps press it), and fails a trial whose worker died."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

import socket

from cifar_app.sweeps import spec as sweep_spec
from cifar_app.sweeps import worker as sweep_worker
from cifar_app.sweeps.space import SearchSpace
from cifar_app.sweeps.spec import SweepSpec
from cifar_app.sweeps.storage import SweepStorage
from conftest import ROOT, write_batches

SWEEPS = "app_pages/sweeps.py"
TINY = {"blocks": 3, "width": 8, "k": 2, "batch_size": 32, "device": "cpu", "epochs": 2}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Tiny CIFAR-10 on disk, an empty run store, worker launches recorded instead of started, fresh caches."""
    write_batches(tmp_path / "data", train_per_class=30, test_per_class=5)
    monkeypatch.setenv("CIFAR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("CIFAR_SWEEP_STORAGE", raising=False)
    launched = []
    monkeypatch.setattr(sweep_worker, "launch_workers", lambda name, storage, count, gpus=0, terminal=False:
                        launched.append((name, count)) or [])
    st.cache_resource.clear()
    st.cache_data.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path, launched
    st.cache_resource.clear()
    torch.set_num_threads(threads)


def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).switch_page(SWEEPS).run()


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in (at.markdown, at.caption, at.info, at.success, at.error)
                     for e in kind)


def finished_sweep(tmp_path, name: str = "done", trials: int = 3, vary: tuple[str, ...] = ("lr=1e-3:1e-2:log",)
                   ) -> SweepSpec:
    storage = SweepStorage(tmp_path / "runs")
    spec = SweepSpec.from_preset(name, "quick", SearchSpace.from_flags(list(vary)),
                                 data_dir=str(tmp_path / "data"), val_size=50, settings=TINY, trials=trials,
                                 pruner="none")
    sweep_spec.create_sweep(spec, storage)
    sweep_worker.work(name, storage)
    return spec


def test_the_form_refuses_an_impossible_search_and_starts_a_valid_one(env):
    tmp_path, launched = env
    at = page()
    assert not at.exception and at.segmented_control(key="sweeps_view").value == "New sweep"  # no sweep yet
    at.text_input(key="sweep_name").set_value("first")
    at.number_input(key="sweep_val_size").set_value(100)
    at.number_input(key="sweep_trials").set_value(3)
    at.multiselect(key="sweep_fields").set_value(["lr", "batch_size"]).run()
    at.number_input(key="sweep_dim_lr_low").set_value(0.1).run()  # above its high end, 0.01
    assert "lr: the low end 0.1 is above the high end 0.01" in texts(at)
    assert at.button(key="sweep_start").disabled
    at.number_input(key="sweep_dim_lr_low").set_value(0.0)
    at.segmented_control(key="sweep_dim_lr_mode").set_value("range").run()
    assert "lr = 0: learning rate must be positive" in texts(at)
    at.multiselect(key="sweep_fields").set_value([]).run()
    assert "the search space is empty" in texts(at)
    at.multiselect(key="sweep_fields").set_value(["lr"]).run()
    at.segmented_control(key="sweep_dim_lr_mode").set_value("log range").run()
    at.number_input(key="sweep_dim_lr_low").set_value(0.001).run()
    at.number_input(key="sweep_epochs").set_value(1).run()  # a short sweep without searching epochs
    assert not at.button(key="sweep_start").disabled and not at.error
    at.button(key="sweep_start").click().run()
    assert launched == [("first", 1)] and not at.exception
    assert at.segmented_control(key="sweeps_view").value == "Watch" and "Started sweep **first**" in texts(at)
    assert at.selectbox(key="sweep_pick").value == "first"
    spec = sweep_spec.load_sweep("first", SweepStorage(tmp_path / "runs"))[1]
    assert (spec.trials, spec.base.val_size, spec.space.names, spec.base.records) == (3, 100, ["lr"], False)
    assert spec.base.epochs == 1 and spec.trial_config({"lr": 1e-3}, 0).eval_every == 1

    at.segmented_control(key="sweeps_view").set_value("New sweep").run()
    at.text_input(key="sweep_name").set_value("first").run()
    at.button(key="sweep_start").click().run()
    assert "a sweep named 'first' already exists" in texts(at) and launched == [("first", 1)]


def test_the_live_view_shows_trials_best_test_accuracy_charts_and_links(env):
    tmp_path, launched = env
    finished_sweep(tmp_path)
    study, spec = sweep_spec.load_sweep("done", SweepStorage(tmp_path / "runs"))
    at = page()
    assert not at.exception and at.segmented_control(key="sweeps_view").value == "Watch"
    table = at.dataframe[0].value
    assert table["trial"].tolist() == [0, 1, 2] and table["state"].tolist() == ["complete"] * 3
    assert table["run"].tolist() == [t.user_attrs["run_id"] for t in study.trials]
    metrics = {m.label: m.value for m in at.metric}
    best = study.best_trial
    assert metrics["Best validation accuracy"] == f"{best.value:.2f}%"
    assert metrics["Its test accuracy"] == f"{best.user_attrs['test_acc']:.2f}%"
    assert metrics["Trials done"] == "3 of 3" and "Finished: 3 of 3 trials done" in at.get("progress")[0].proto.text
    titles = [json.loads(c.proto.spec).get("title") for c in at.get("vega_lite_chart")]
    assert titles == ["Best so far", "Hyperparameters and accuracy", "Hyperparameter importances",
                      "Learning curves (validation accuracy per epoch)"]
    links = {link.proto.label: link.proto.query_string for link in at.get("page_link")}
    assert links["Open its run"] == f"run={best.user_attrs['run_id']}"  # the best trial, until one is picked
    at.session_state["sweep_trials_done"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    links = {link.proto.label: link.proto.query_string for link in at.get("page_link")}
    assert links["Evaluate it"] == f"run={study.trials[0].user_attrs['run_id']}" and "**Trial 0**" in texts(at)

    # and back: the Runs page opens the trial's run and links to its sweep
    at.query_params["run"] = study.trials[0].user_attrs["run_id"]
    at.switch_page("app_pages/runs.py").run()
    assert at.selectbox(key="run_pick").value == study.trials[0].user_attrs["run_id"]
    back = [link.proto for link in at.get("page_link") if "sweep" in link.proto.label]
    assert back[0].label == "Trial 0 of sweep done" and back[0].query_string == "sweep=done"


def test_stop_and_go_on_and_a_dead_worker_s_trial_fails(env):
    tmp_path, launched = env
    storage = SweepStorage(tmp_path / "runs")
    spec = SweepSpec.from_preset("idle", "quick", SearchSpace.from_flags(["lr=1e-3:1e-2:log"]),
                                 data_dir=str(tmp_path / "data"), val_size=50, settings=TINY, trials=2, workers=2)
    study = sweep_spec.create_sweep(spec, storage)
    gone = subprocess.Popen(["true"])
    gone.wait()
    trial = study.ask()  # a worker claimed it, then died before its run began
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": gone.pid, "pid_start": "1"})
    at = page()
    assert not at.exception
    table = at.dataframe[0].value
    assert table["state"].tolist() == ["failed", "waiting"] and f"its worker (pid {gone.pid}) died" in table["reason"][0]
    assert table["reason"][1] == "queued: runs trial 0 again"  # its hyperparameters were never judged
    assert "Waiting for workers: 0 of 2 trials done" in at.get("progress")[0].proto.text
    at.button(key="sweep_stop").click().run()
    assert sweep_spec.stop_requested(study) and "Stopped" in at.get("progress")[0].proto.text
    at.button(key="sweep_resume").click().run()
    assert not sweep_spec.stop_requested(study) and launched == [("idle", 2)]


def test_a_sweep_that_searches_epochs_shows_its_table_charts_and_importances(env):
    """`epochs` is both a searched hyperparameter and the table's progress column: both are shown."""
    tmp_path, _ = env
    finished_sweep(tmp_path, "short", trials=3, vary=("lr=1e-3:1e-2:log", "epochs=1,2"))
    study, _ = sweep_spec.load_sweep("short", SweepStorage(tmp_path / "runs"))
    at = page()
    assert not at.exception
    table = at.dataframe[0].value
    assert table["param epochs"].tolist() == [t.params["epochs"] for t in study.trials]
    assert table["epochs"].tolist() == [f"{t.params['epochs']}/{t.params['epochs']}" for t in study.trials]
    assert len(at.get("vega_lite_chart")) == 4 and "Finished: 3 of 3 trials done" in at.get("progress")[0].proto.text


def test_go_on_pressed_in_two_tabs_and_in_a_second_app_starts_the_workers_once(env, monkeypatch):
    tmp_path, launched = env
    sleepers = []

    def launch(name, storage, count, gpus=0, terminal=False):  # stand-ins for worker processes: they stay alive
        launched.append((name, count))
        sleepers.extend(subprocess.Popen(["sleep", "60"]) for _ in range(count))
        return sleepers[-count:] if count else []

    monkeypatch.setattr(sweep_worker, "launch_workers", launch)
    storage = SweepStorage(tmp_path / "runs")
    spec = SweepSpec.from_preset("twice", "quick", SearchSpace.from_flags(["lr=1e-3:1e-2:log"]),
                                 data_dir=str(tmp_path / "data"), val_size=50, settings=TINY, trials=4, workers=2)
    sweep_spec.request_stop(sweep_spec.create_sweep(spec, storage))
    try:
        tabs = [page(), page(), page()]  # three tabs on the stopped sweep, each showing "Go on"
        assert all(tab.button(key="sweep_resume") for tab in tabs)
        tabs[0].button(key="sweep_resume").click().run()
        tabs[1].button(key="sweep_resume").click().run()
        st.cache_resource.clear()  # the third tab's app is another (or this one restarted): it knows nothing of them
        tabs[2].button(key="sweep_resume").click().run()
        assert launched == [("twice", 2)] and not any(tab.exception for tab in tabs)
        assert all("already has 2 worker(s) running on this machine" in texts(tab) for tab in tabs[1:])
        assert "2 worker(s) started on this machine are loading" in texts(page())
        assert "sweep_resume" not in [button.key for button in page().button]
    finally:
        for sleeper in sleepers:
            os.kill(sleeper.pid, signal.SIGKILL)
            sleeper.wait()


def test_an_unreachable_database_is_a_sentence_with_its_password_masked(env, monkeypatch):
    monkeypatch.setenv("CIFAR_SWEEP_STORAGE", "postgresql://sweeper:hunter2-xyz@127.0.0.1:9/sweeps")
    at = page()
    assert not at.exception
    said = texts(at)
    assert "cannot reach the sweep storage postgresql://sweeper:***@127.0.0.1:9/sweeps" in said
    assert "hunter2" not in said
