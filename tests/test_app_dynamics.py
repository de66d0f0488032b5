"""The Dynamics page in Streamlit's AppTest, on the shared tiny trained run (which keeps a per-image record),
on a copy of it without its record, and on a copy that grows an epoch while the page is open."""

import json
import os
import shutil
import socket
import time

import pytest
from streamlit.testing.v1 import AppTest

from cifar_app.analysis import dynamics
from cifar_app.data.formats import CLASSES
from cifar_app.store.records import RECORDS_DIR, epoch_file
from cifar_app.store.runs import RunStore
from conftest import ROOT
from explore_helpers import trained_runs_dir
from test_app_explore import data_dir, fresh_caches  # noqa: F401 (fixtures: tiny data on disk, clean caches)

TIMEOUT = 60


@pytest.fixture
def copied_run(tmp_path, monkeypatch):
    """A copy of the tiny trained run in a run store of its own (so a test may change it)."""
    source = RunStore(trained_runs_dir()).runs()[0]
    target = tmp_path / "runs" / source.id
    shutil.copytree(source.path, target)
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(tmp_path / "runs"))
    return RunStore(tmp_path / "runs").get(source.id)


def page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app_pages" / "dynamics.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def text_of(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "info", "error", "caption", "warning") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def view_buttons(at: AppTest, gallery: str) -> list:
    return [b for b in at.button if b.key and b.key.startswith(gallery + "_")]


def test_the_page_maps_lists_and_follows_the_test_set(data_dir, copied_run):
    at = page()
    records = dynamics.load_records(copied_run.path)
    table = dynamics.image_table(records)
    assert metric(at, "Training images") == f"{len(table):,}" and metric(at, "Epochs recorded") == "1–3"
    assert len(at.get("vega_lite_chart")) == 3  # the data map, the accuracy per class, the confusion matrix

    # until a box is drawn, the gallery shows a region; a caption opens the image's view
    hard = table[table["region"] == "hard to learn"]
    assert f"**{len(hard):,}** images **hard to learn**" in text_of(at)
    buttons = view_buttons(at, "dynamics_map_gallery")
    assert len(buttons) == min(24, len(hard))
    first = hard.sort_values("confidence", kind="stable").iloc[0]
    tie = " (a tie)" if first["most_predicted_tied"] else ""
    assert buttons[0].label == f"#{first['index']} {first['label']} → {first['most_predicted']}{tie}"
    buttons[0].click().run()
    assert f"**train image #{first['index']}** · labelled **{first['label']}**" in text_of(at)
    assert "probability at each epoch" in text_of(at) and "The model says" in text_of(at)

    at.radio(key="dynamics_region").set_value("easy to learn").run()
    at.multiselect(key="dynamics_classes").set_value(["cat"]).run()
    easy_cats = table[(table["region"] == "easy to learn") & (table["label"] == "cat")]
    assert f"**{len(easy_cats):,}** images **easy to learn**" in text_of(at)
    assert all(" cat → " in b.label for b in view_buttons(at, "dynamics_map_gallery"))
    at.multiselect(key="dynamics_classes").set_value([]).run()

    for name, (make, _) in dynamics.LISTS.items():
        at.radio(key="dynamics_list").set_value(name).run()
        assert not at.exception
        assert f"**{len(make(table)):,}** training images **{name}**" in text_of(at)
    at.radio(key="dynamics_list").set_value("learned last").run()
    assert at.get("download_button")

    # the test set: the confusion matrix at an epoch, a cell's images, the changes between epochs
    at.select_slider(key="dynamics_test_epoch").set_value(2).run()
    at.selectbox(key="dynamics_true").set_value("cat").run()
    at.selectbox(key="dynamics_predicted").set_value("cat").run()
    cell = dynamics.cell_images(records, 2, CLASSES.index("cat"), CLASSES.index("cat"))
    assert f"**{len(cell)}** test images of **cat** classified correctly at epoch 2" in text_of(at)
    test_buttons = view_buttons(at, "dynamics_cell_gallery")
    assert [b.label.split(" · ")[0] for b in test_buttons] == [f"#{i}" for i in cell["index"][:24]]
    if test_buttons:
        test_buttons[0].click().run()
        assert f"**test image #{cell['index'].iloc[0]}** · labelled **cat**" in text_of(at)
    changes = dynamics.changed_predictions(records, 1, 3)
    assert f"**{len(changes):,}** test images changed their prediction between epoch 1 and epoch 3" in text_of(at)
    at.radio(key="dynamics_change_kind").set_value("fixed").run()
    assert len(view_buttons(at, "dynamics_change_gallery")) == min(48, int((changes["change"] == "fixed").sum()))
    assert not at.exception


def test_a_run_without_a_record_gets_a_sentence_not_an_empty_chart(data_dir, copied_run):
    shutil.rmtree(copied_run.path / RECORDS_DIR)
    at = page()
    assert "has no per-image records" in text_of(at) and f"--fork {copied_run.id}" in text_of(at)
    assert not at.get("vega_lite_chart")


def test_the_page_follows_a_run_training_in_another_process(data_dir, copied_run):
    # the run "trains" elsewhere: running, alive (this process's pid), its third epoch not yet written
    last = epoch_file(copied_run.path / RECORDS_DIR, 3)
    held = last.read_bytes()
    last.unlink()
    copied_run.claim(heartbeat=time.time(), progress={"epoch": 3, "batch": 2, "batches": 6})
    meta = json.loads((copied_run.path / "meta.json").read_text())
    assert meta["pid"] == os.getpid() and meta["host"] == socket.gethostname()
    at = page()
    assert metric(at, "Epochs recorded") == "1–2"
    assert "Training (epoch 3, batch 2 of 6)" in text_of(at)
    last.write_bytes(held)  # the epoch ends: its record arrives, and the next redraw shows it
    at.run()
    assert metric(at, "Epochs recorded") == "1–3"
