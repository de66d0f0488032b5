"""The search for wrong labels: the detectors' scores and metrics on made-up probabilities, and the whole loop on
tiny data (a run on a noisy label set, its fold runs through the launcher, the results saved with the run, the top
suggestions accepted into a new version of the set)."""

from __future__ import annotations

import time

import numpy as np

from cifar_app.analysis.label_errors import auroc, detect, detection_metrics, flagged, load_results, load_summary
from cifar_app.analysis.label_search import accept_top, find_label_errors, search_state, start_search
from cifar_app.data.formats import CLASSES
from cifar_app.data.labels import LabelStore
from cifar_app.engine.loop import train
from cifar_app.labels import main as labels_main
from cifar_app.store.runs import RunStore
from conftest import make_images, tiny_config, write_batches


def test_auroc_is_the_share_of_pairs_ranked_right():
    truth = np.array([True, False, True, False])
    assert auroc(np.array([0.9, 0.1, 0.8, 0.2]), truth) == 1.0
    assert auroc(np.array([0.1, 0.9, 0.2, 0.8]), truth) == 0.0
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), truth) == 0.5


def test_the_detectors_find_labels_the_probabilities_contradict():
    rng = np.random.default_rng(0)
    n, wrong = 1000, np.arange(0, 1000, 10)  # every tenth label is wrong
    true = rng.integers(0, 10, n)
    labels = true.copy()
    labels[wrong] = (true[wrong] + 1 + rng.integers(0, 9, len(wrong))) % 10
    probs = rng.dirichlet(np.ones(10) * 0.3, n) * 0.3
    probs[np.arange(n), true] += 0.7
    dynamics = np.where(np.isin(np.arange(n), wrong), 0.5, -0.5) + rng.normal(0, 0.3, n)
    table = detect(np.arange(n), labels, probs, dynamics)
    assert list(table.columns[:3]) == ["index", "label", "suggested"]
    metrics = detection_metrics(table, wrong).set_index("detector")
    assert metrics.loc["cleanlab", "auroc"] > 0.95 and metrics.loc["combined", "P@100"] > 0.9
    top = flagged(table).head(50)
    right = np.array([s == CLASSES[true[i]] for i, s in zip(top["index"], top["suggested"])])
    assert right.mean() > 0.9


def test_the_whole_loop_on_tiny_data(tmp_path, capsys):
    data_dir, runs_dir = tmp_path / "data", tmp_path / "runs"
    write_batches(data_dir)
    own = make_images(20, seed=1)[1]
    noisy = own.copy()
    noisy[:20] = (own[:20] + 3) % 10
    LabelStore(data_dir).create("noisy", noisy, own, "test")
    config = tiny_config(epochs=3, labels="noisy", data_dir=str(data_dir), name="base")
    run = train(config, store=RunStore(runs_dir)).run
    message = find_label_errors(run.id, str(runs_dir), str(data_dir), folds=2, say=lambda line: None)
    assert "200 training images of base (noisy@0) searched" in message
    table, summary = load_results(run.path), load_summary(run.path)
    assert len(table) == 200 and summary["folds"] == 2 and len(summary["fold_runs"]) == 2
    assert len(load_results(run.path, "test")) == 100
    folds = [r.config() for r in RunStore(runs_dir).runs() if r.id in summary["fold_runs"]]
    assert sorted(c.fold for c in folds) == [0, 1] and {c.labels for c in folds} == {"noisy@0"}
    assert all(c.tta_flip and c.folds == 2 for c in folds)
    assert detection_metrics(table, np.arange(20)).set_index("detector").loc["cleanlab", "auroc"] > 0.5
    # a second search trains nothing new
    find_label_errors(run.id, str(runs_dir), str(data_dir), folds=2, say=lambda line: None)
    assert len(RunStore(runs_dir).runs()) == 3
    if flagged(table).empty:
        return
    top = min(5, len(flagged(table)))
    assert f"noisy@1: {top} suggestions accepted" in accept_top(run.id, top, str(runs_dir), str(data_dir))
    label_set = LabelStore(data_dir).get("noisy")
    assert int((label_set.labels() != noisy).sum()) == top
    assert labels_main(["--data-dir", str(data_dir), "undo", "noisy"]) == 0 and "undo version 1" in capsys.readouterr().out


def test_a_search_started_for_the_page_runs_in_a_process_of_its_own(tmp_path):
    data_dir, runs_dir = tmp_path / "data", tmp_path / "runs"
    write_batches(data_dir)
    run = train(tiny_config(epochs=2, data_dir=str(data_dir), name="base"), store=RunStore(runs_dir)).run
    assert search_state(run) == ("", "")
    start_search(run, runs_dir, str(data_dir), folds=2)
    deadline = time.monotonic() + 120
    while search_state(run)[0] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    state, line = search_state(run)
    assert state == "ended" and "200 training images of base (the dataset own labels) searched" in line
    assert len(load_results(run.path)) == 200
