"""Per-image records of training (engine.recorder writes them, analysis.dynamics reads them): what the loop writes, what the analysis reads from it."""

import io
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cifar_app.analysis import dynamics
from cifar_app.data.formats import CLASSES
from cifar_app.analysis.dynamics import (
    cell_images, changed_predictions, class_accuracy_over_epochs, confusion_at, forgetting, image_table, likely_mislabelled, load_records, trajectory,
)
from ui.charts.dynamics import map_density, map_sample
from ui.png import tile_png
from cifar_app.events import BatchEvent, EvalEvent
from cifar_app.store.runs import RunStore
from cifar_app.engine.loop import train
from conftest import tiny_cifar, tiny_config


def test_forgetting_counts_and_learned_epochs_by_hand():
    # rows: epochs 3..8 (a fork's record starts late); columns: five images; -1 = not trained on that epoch
    epochs = np.arange(3, 9)
    correct = np.array([
        # a   b   c   d   e
        [0, 1, 0, 1, 1],   # epoch 3
        [1, 0, 0, -1, 1],  # epoch 4
        [1, 1, 0, 1, 1],   # epoch 5
        [0, 0, 0, 0, -1],  # epoch 6
        [1, 1, 0, -1, 1],  # epoch 7
        [1, 0, 0, 1, 1],   # epoch 8
    ], dtype=np.int8)
    forgets, first, since = forgetting(correct, epochs)
    # a: right 4,5 then wrong 6 (one event), right again from 7
    # b: right 3 -> wrong 4, right 5 -> wrong 6, right 7 -> wrong 8: three events, wrong at the end
    # c: never right; d: right 3, (unseen 4), right 5 -> wrong 6 (one event; the gap is not a change), right 8
    # e: right whenever seen
    assert forgets.tolist() == [1, 3, 0, 1, 0]
    assert first.tolist()[:2] == [4, 3] and np.isnan(first[2]) and first.tolist()[3:] == [3, 3]
    assert since[0] == 7 and np.isnan(since[1]) and np.isnan(since[2]) and since[3] == 8 and since[4] == 3


def flipped_data(per_class: int, flip_share: float, seed: int = 7):
    data = tiny_cifar(train_per_class=per_class, test_per_class=2)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.train_labels)
    flipped = torch.randperm(n, generator=gen)[: int(n * flip_share)]
    data.train_labels[flipped] = (data.train_labels[flipped] + torch.randint(1, 10, (len(flipped),), generator=gen)) % 10
    return data, set(flipped.tolist())


def test_the_likely_mislabelled_list_finds_flipped_labels(tmp_path):
    data, flipped = flipped_data(per_class=30, flip_share=0.1)  # 30 of 300 labels changed to another class
    result = train(tiny_config(epochs=4), data=data, store=RunStore(tmp_path))
    table = image_table(load_records(result.run.path))
    listed = likely_mislabelled(table)
    k = 20
    top = listed.head(k)
    precision = len(set(top["index"]) & flipped) / k
    assert precision >= 0.8, precision  # chance is the flip rate, 0.1
    recall = len(set(listed["index"]) & flipped) / len(flipped)
    assert recall >= 0.5, recall
    # what the model thinks they are: the class the flip took them from, for most of them
    originals = tiny_cifar(train_per_class=30, test_per_class=2).train_labels
    hits = top[top["index"].isin(flipped)]
    agree = np.mean([CLASSES.index(r["looks_like"]) == originals[r["index"]] for _, r in hits.iterrows()])
    assert agree >= 0.8


def record_arrays(run):
    records = load_records(run.path)
    return records, {name: getattr(records, name) for name in
                     ("train_index", "epochs", "p_true", "correct", "other", "p_other", "test_epochs", "test_pred",
                      "test_p_true")}


def test_a_killed_and_stopped_run_resumed_records_what_the_uninterrupted_run_records(tmp_path):
    data = tiny_cifar(train_per_class=17)
    config = tiny_config(epochs=3, val_size=20, train_subset=130, augment=True)  # 4 batches of 32, 2 dropped
    straight = train(config, data=data, store=RunStore(tmp_path / "straight"))

    class Killed(KeyboardInterrupt):
        pass

    def kill_at(epoch, batch):
        def on_event(event):
            if isinstance(event, BatchEvent) and (event.epoch, event.batch) == (epoch, batch):
                raise Killed  # after batch 3 was trained and before it was checkpointed: a kill loses it
        return on_event

    # a checkpoint after every batch, then a "kill" in epoch 2: what the process had after batch 2 is on disk
    first = train(config, data=data, store=RunStore(tmp_path / "resumed"), on_event=kill_at(2, 3),
                  checkpoint_every_s=0, report_interval_s=0)
    run = first.run
    assert run.load_checkpoint("last")["batch"] == 2
    readable = load_records(run.path)  # the epochs written so far are readable before the run ends
    assert readable.epochs.tolist() == [1]

    stop = threading.Event()

    def stop_while_testing(event):  # Stop pressed as validation ends: the test pass stops at its first batch
        if isinstance(event, EvalEvent) and event.split == "validation":
            stop.set()

    second = train(config, data=data, resume=run, stop=stop, on_event=stop_while_testing, report_interval_s=0)
    assert "while evaluating epoch 2" in second.reason
    assert load_records(run.path).epochs.tolist() == [1]
    assert train(config, data=data, resume=run).status == "finished"

    got, got_arrays = record_arrays(run)
    want, want_arrays = record_arrays(straight.run)
    for name, array in want_arrays.items():
        if array.dtype.kind == "f":
            np.testing.assert_allclose(got_arrays[name], array, rtol=0, atol=1e-3, err_msg=name)
        else:
            np.testing.assert_array_equal(got_arrays[name], array, err_msg=name)
    # indices are the original training set's: the labels agree, no validation image is among them
    assert np.array_equal(data.train_labels.numpy()[got.train_index], got.train_labels)
    assert len(got.train_index) == 130 and len(set(got.train_index)) == 130
    assert ((got.correct >= 0).sum(1) == 128).all()  # the last partial batch is dropped: 2 unseen each epoch
    # the record's accuracy is the loop's training accuracy, epoch by epoch
    loop_acc = [r["train_acc"] for r in run.metrics()]
    assert 100 * (got.correct == 1).sum(1) / 128 == pytest.approx(loop_acc)
    assert [r["test_acc"] for r in run.metrics()] == pytest.approx(
        class_accuracy_over_epochs(got).query("`class` == 'all'")["accuracy"].tolist())


def test_a_fork_records_from_its_branch_point_and_says_so(tmp_path, capsys):
    store = RunStore(tmp_path)
    data = tiny_cifar()
    parent = train(tiny_config(epochs=2, records=False), data=data, store=store).run
    assert load_records(parent.path) is None
    assert dynamics.main([parent.id, "--runs-dir", str(tmp_path)]) == 1
    assert "no per-image records" in capsys.readouterr().out

    fork = train(tiny_config(epochs=4), data=data, store=store, fork=(parent, "last")).run
    records = load_records(fork.path)
    assert records.epochs.tolist() == [3, 4] and records.first_epoch == 3
    assert f"fork of run {parent.id} at epoch 2" in records.origin
    assert dynamics.main([str(fork.path), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "the record starts at epoch 3: fork of run" in out and "easy to learn" in out
    assert "most forgotten (top 3)" in out and "likely mislabelled (top 3)" in out


def test_the_test_set_over_epochs(tmp_path):
    from explore_helpers import trained_runs_dir

    run = RunStore(trained_runs_dir()).runs()[0]
    records = load_records(run.path)
    assert records.test_epochs.tolist() == [1, 2, 3]
    cells = confusion_at(records, 2)
    assert cells["count"].sum() == 100 and len(cells) == 100
    predicted = records.test_pred[1]
    cat = CLASSES.index("cat")
    cell = cell_images(records, 2, cat, cat)
    assert sorted(cell["index"]) == list(np.flatnonzero((records.test_labels == cat) & (predicted == cat)))
    assert cell["p_true"].is_monotonic_increasing
    changes = changed_predictions(records, 1, 3)
    assert len(changes) == int((records.test_pred[0] != records.test_pred[2]).sum())
    for _, row in changes.iterrows():
        assert row["before"] != row["after"]
        assert row["change"] == ("fixed" if row["after"] == row["label"] else
                                 "broken" if row["before"] == row["label"] else "switched")
    path = trajectory(records, "test", 0)
    assert path["epoch"].tolist() == [1, 2, 3]
    assert path["predicted"].tolist() == [CLASSES[c] for c in records.test_pred[:, 0]]
    assert trajectory(records, "train", 10_000).empty  # not in this run's training images


def test_the_data_map_draws_every_image_where_few_lie_and_thins_the_crowds():
    rng = np.random.default_rng(0)
    crowd = pd.DataFrame({"confidence": rng.uniform(0.9, 0.95, 20_000), "variability": rng.uniform(0.0, 0.02, 20_000)})
    loners = pd.DataFrame({"confidence": np.linspace(0.02, 0.6, 60), "variability": np.linspace(0.05, 0.45, 60)})
    table = pd.concat([crowd, loners], ignore_index=True)
    drawn = map_sample(table, max_points=1000)
    assert len(drawn) <= 1000 and set(loners.index + len(crowd)) <= set(drawn.index)
    assert map_density(table)["images"].sum() == len(table)
    assert len(map_sample(table.head(500), max_points=1000)) == 500  # few enough: every image is drawn

    image = np.zeros((3, 32, 32), dtype=np.uint8)
    tile = Image.open(io.BytesIO(tile_png(image, np.array([0.1, np.nan, 0.8]))))
    assert tile.size == (96, 96 + 26)
    assert Image.open(io.BytesIO(tile_png(image))).size == (96, 96)


def test_a_tie_for_the_most_predicted_class_is_named_as_one_in_the_table_and_the_image_view():
    from pathlib import Path

    from ui.image_view import most_predicted

    # one deer image over four epochs: right (deer), wrong (frog), wrong (frog), right (deer): two each
    correct = np.array([[1], [0], [0], [1]], dtype=np.int8)
    other = np.full((4, 1), CLASSES.index("frog"), dtype=np.int16)
    records = dynamics.Records(Path("."), {}, np.array([0]), np.array([CLASSES.index("deer")]), np.arange(1, 5),
                               np.full((4, 1), 0.5, np.float32), correct, other, np.full((4, 1), 0.4, np.float32),
                               np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.int64),
                               np.zeros((0, 0), np.float32))
    row = dynamics.image_table(records).iloc[0]
    assert row["most_predicted"] == "deer" and row["most_predicted_tied"]  # deer was also predicted at the last epoch
    assert most_predicted(["deer", "frog", "frog", "deer"]) == (
        "Predicted as often as each other: deer and frog (2 of 4 epochs each; deer in the later ones)")
    assert most_predicted(["frog", "frog", "deer"]) == "Predicted most often: frog (2 of 3 epochs)"
