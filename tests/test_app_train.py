"""The dashboard and its Train page through Streamlit's AppTest: the widgets, the presets, Start and Stop.

AppTest runs the script in this process, so the job manager the page uses is the one `common.job_manager()`
returns here; the fixture clears Streamlit's caches and stops the job between tests. AppTest does not tick
`run_every` timers: a test reruns the page itself once the job has moved on (the browser test sees the ticks).
`rerun` runs the whole app again, from dashboard.py, on the page the previous run finished on, as a browser
does (AppTest's public `run()`; the app's root URL opens the Train page at /train).
"""

import json
import time
from dataclasses import fields
from pathlib import Path

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from cifar_app.engine import speed
from ui import common
from cifar_app.config import RUNTIME_FIELDS, ConfigError, TrainConfig, preset
from cifar_app.shape import summarize_shape
from conftest import ROOT, write_batches

TIMEOUT = 60
TINY = {"blocks": 3, "width": 8, "k": 2, "batch_size": 32, "epochs": 2, "lr": 3e-3}
HYPERPARAMETERS = [f.name for f in fields(TrainConfig) if f.name not in RUNTIME_FIELDS]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Tiny CIFAR-10 on disk, an empty run store, no speed measurement (a fake speed), fresh caches."""
    data_dir = tmp_path / "data"
    write_batches(data_dir)
    monkeypatch.setenv("CIFAR_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(speed, "measure_images_per_s", lambda config, device, batches=3, **kwargs: 500.0)
    st.cache_resource.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads, and they spin when the cores are shared
    yield tmp_path
    assert common.job_manager().shutdown(), "the training thread did not stop"
    st.cache_resource.clear()
    torch.set_num_threads(threads)


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)


def rerun(at: AppTest) -> AppTest:
    return at.run()


def widget_values(at: AppTest) -> dict:
    values = {}
    for kind in (at.slider, at.select_slider, at.number_input, at.checkbox, at.selectbox, at.text_input):
        values.update({w.key[4:]: w.value for w in kind if w.key and w.key.startswith("cfg_")})
    return values


def set_widgets(at: AppTest, **values) -> AppTest:
    lists = (at.slider, at.select_slider, at.number_input, at.checkbox, at.selectbox, at.text_input)
    for name, value in values.items():
        widget = next(w for kind in lists for w in kind if w.key == f"cfg_{name}")
        widget.set_value(value)
    return rerun(at)


def texts(at: AppTest) -> str:
    parts = [e.value for kind in (at.markdown, at.caption, at.info, at.success, at.warning, at.error, at.subheader)
             for e in kind]
    return "\n".join(str(p) for p in parts)


def test_the_train_page_opens_on_the_preset_this_machine_can_train_and_says_why(env):
    at = app().run()
    assert not at.exception
    values = widget_values(at)
    opened = "seed" if torch.cuda.is_available() else "quick"  # 25 seed epochs are many hours on a CPU
    chosen = preset(opened)
    assert {name: values[name] for name in HYPERPARAMETERS} == {name: getattr(chosen, name) for name in HYPERPARAMETERS}
    assert at.segmented_control(key="preset").value == opened
    assert f"Opened on `{opened}`" in texts(at)
    sidebar = "\n".join(str(e.value) for e in at.sidebar.caption)
    assert "CIFAR-10 ready" in sidebar and "Idle" in sidebar and ("CPU" in sidebar or "GPU" in sidebar)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == f"{summarize_shape(chosen.blocks, chosen.k, chosen.width).params / 1e6:.2f} M"
    assert "min" in metrics["Time per epoch (rough)"]
    if not torch.cuda.is_available():  # what the device cannot do is not offered
        assert "cuda" not in at.selectbox(key="cfg_device").options
        assert not [w for w in at.checkbox if w.key == "cfg_cuda_graphs"]
    assert not at.button(key="start").disabled and at.button(key="stop").disabled
    assert "press **Start training**" in texts(at)


def test_choosing_a_preset_fills_in_its_values(env):
    at = app().run()
    at.segmented_control(key="preset").set_value("quick")
    rerun(at)
    values, quick = widget_values(at), preset("quick")
    assert {name: values[name] for name in HYPERPARAMETERS} == {name: getattr(quick, name) for name in HYPERPARAMETERS}
    set_widgets(at, epochs=7)
    assert at.segmented_control(key="preset").value is None and "custom" in texts(at)
    at.segmented_control(key="preset").set_value("seed")
    rerun(at)
    assert widget_values(at)["epochs"] == 25 and widget_values(at)["width"] == preset("seed").width
    assert not at.exception


def test_every_slider_at_its_end_is_refused_without_building_the_network(env, monkeypatch):
    probed = []
    monkeypatch.setattr(speed, "measure_images_per_s",
                        lambda config, device, batches=3, **kwargs: probed.append(config) or 1.0)
    at = set_widgets(app().run(), blocks=30, k=16, width=256)  # 5,968 M parameters
    assert not at.exception and at.button(key="start").disabled
    assert "M parameters, more than the 200 M this app trains" in texts(at)
    assert "number of blocks." in texts(at) and ".." not in texts(at)  # one period, in the list and the caption
    assert [c.width for c in probed] == [preset("quick" if not torch.cuda.is_available() else "seed").width]
    # (the page opened on a preset and timed it; the 5,968 M-parameter network was never built to be timed)
    assert {m.label: m.value for m in at.metric}["Time per epoch"] == "—"


def test_an_impossible_configuration_is_explained_before_start(env):
    at = app().run()
    set_widgets(at, epochs=2, warmup_epochs=3.0)
    assert at.button(key="start").disabled
    assert "warm-up (3.0 epochs) must be shorter than the run" in texts(at)


def test_start_trains_a_tiny_model_and_the_page_shows_its_epochs(env):
    at = set_widgets(app().run(), **TINY)
    at.button(key="start").click()
    rerun(at)
    manager = common.job_manager()
    assert manager.wait(TIMEOUT)
    rerun(at)
    assert not at.exception
    snap = manager.snapshot()
    assert snap.status == "finished"
    table = at.dataframe[0].value
    assert list(table["epoch"]) == [1, 2] and table["test_acc"].notna().all()
    assert "The run finished 2 epochs" in texts(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Best test accuracy"].endswith("%") and metrics["Final test accuracy"].endswith("%")
    specs = [chart.proto.spec for chart in at.get("vega_lite_chart")]
    assert len(specs) == 4 and any('"Learning rate"' in spec for spec in specs)  # loss, accuracy, running loss, lr
    rates = [p["lr"] for p in snap.loss_rows()]
    if snap.config.schedule == "onecycle":  # the form keeps the opening preset's schedule: up to the peak and down
        assert max(rates) <= TINY["lr"] and rates[-1] < max(rates)
    at.slider(key="loss_smoothing").set_value(0.0)
    rerun(at)
    assert not at.exception and len(at.get("vega_lite_chart")) == 4
    assert at.download_button(key="epochs_csv")
    saved = json.loads((Path(snap.run_path) / "config.json").read_text())["config"]
    assert {k: saved[k] for k in TINY} == TINY and manager.store.get(snap.run_id).status() == "finished"
    # a reload (a new session) shows the settings of the run on the page, not the seed preset's
    fresh = app().run()
    assert {k: widget_values(fresh)[k] for k in TINY} == TINY and fresh.segmented_control(key="preset").value is None
    # the next run of this shape is estimated from this run's own pace, not the probe's 500 images/s
    assert f"the pace of your run {manager.store.get(snap.run_id).name} on this machine" in texts(fresh)


def test_stop_stops_a_running_job_and_a_second_start_is_refused(env):
    at = set_widgets(app().run(), **{**TINY, "epochs": 100})
    at.button(key="start").click()
    rerun(at)
    manager = common.job_manager()
    assert manager.running and not at.button(key="stop").disabled
    deadline = time.monotonic() + TIMEOUT
    while manager.snapshot().progress is None:  # until the first batch report
        assert time.monotonic() < deadline
        time.sleep(0.05)
    rerun(at)
    # the live view while it trains: the part the browser draws from the published state (a browser test sees it draw)
    assert "Training:" in texts(at) and [e for e in at.get("bidi_component") if e.key == "live_part"]
    job = manager.snapshot().job_id
    at.button(key="start").click()
    rerun(at)
    assert "Not started: a run is already training" in texts(at)
    assert manager.snapshot().job_id == job and manager.running
    at.button(key="stop").click()
    rerun(at)
    assert manager.wait(30)
    rerun(at)
    snap = manager.snapshot()
    assert snap.status == "stopped" and len(snap.epochs) < 100
    assert "stopped by the user" in texts(at) and "What it learned is saved" in texts(at)
    assert manager.store.get(snap.run_id).has_checkpoint("last")
    assert at.button(key="stop").disabled and not at.exception


def test_a_failing_run_ends_with_its_reason_and_the_app_keeps_working(env):
    at = set_widgets(app().run(), **TINY)
    (env / "data" / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"damaged")  # found, but unreadable
    at.button(key="start").click()
    rerun(at)
    assert common.job_manager().wait(TIMEOUT)
    rerun(at)
    assert "The run failed:" in texts(at) and "data_batch_3 is not a CIFAR-10 batch file" in texts(at)
    assert not at.exception and not at.button(key="start").disabled
    again = app().run()  # a reload (or another tab) shows the same job, and the sidebar says how it ended
    assert "Failed:" in "\n".join(str(e.value) for e in again.sidebar.error)
    assert "The run failed" in texts(again)


def test_without_data_the_sidebar_offers_a_download_with_progress(env, monkeypatch):
    empty = env / "empty"
    monkeypatch.setenv("CIFAR_DATA_DIR", str(empty))
    reported = []

    def fake_download(root, progress=None):
        for done in (50, 100):
            progress(done, 100)
            reported.append(done)
        return write_batches(root)

    monkeypatch.setattr(common, "download_cifar10", fake_download)
    at = app().run()
    assert at.button(key="start").disabled and "there is no CIFAR-10 under" in texts(at)
    assert "No CIFAR-10 under" in "\n".join(str(w.value) for w in at.sidebar.warning)
    at.button(key="download_data").click()
    rerun(at)
    assert reported == [50, 100] and not at.exception
    assert "CIFAR-10 ready" in "\n".join(str(e.value) for e in at.sidebar.caption)
    assert not at.button(key="start").disabled


def test_a_time_budget_says_before_start_what_fits_on_this_machine(env):
    at = app().run()
    at.segmented_control(key="preset").set_value("5min")
    rerun(at)
    values = widget_values(at)
    assert values["time_budget"] == 300 and values["width"] == preset("quick").width
    # the env's probe says 500 images/s: an epoch of 50,000 images and its test pass takes about 107 s
    assert "Trains for 5 min: about 2.8 epochs fit" in texts(at), texts(at)
    epochs = at.slider(key="cfg_epochs")
    assert epochs.disabled and "passes over the training set; with a time budget" in epochs.help
    set_widgets(at, time_budget=60.0)
    assert "Probably too short: a time budget of 60 s fits 0.5 of an epoch" in texts(at)
    assert at.segmented_control(key="preset").value is None  # a quick recipe with its own minutes: custom
    set_widgets(at, time_budget=0.0)
    assert at.segmented_control(key="preset").value == "quick" and "for 3 epochs" in texts(at)
    assert not at.slider(key="cfg_epochs").disabled
    assert not at.exception


def test_a_run_that_cannot_fit_in_memory_is_refused_before_start_with_what_would(env):
    at = set_widgets(app().run(), blocks=11, width=128, k=4, batch_size=8192)  # hundreds of GB at its peak
    assert at.button(key="start").disabled
    refusal = next(e.value for e in at.error if "cannot run" in e.value)
    assert "this run would need about" in refusal and "of this machine's memory is free" in refusal
    assert "lower the batch size (a batch of" in refusal
    with pytest.raises(ConfigError, match="would need about"):  # and the app's Start refuses it too
        common.job_manager().start(preset("seed", width=128, k=4, batch_size=8192, data_dir=str(env / "data")))
