"""Label sets: the formats they are made from, a bad label file refused with a sentence, the edit log and its undo,
training on a set (excluded images left out, the set recorded with the run), and cross-validation folds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cifar_app.analysis import compare
from cifar_app.config import ConfigError
from cifar_app.data.formats import CLASSES
from cifar_app.data.labels import EXCLUDED, LabelSetError, LabelStore, apply_label_set, read_label_file
from cifar_app.data.loader import fold_indices, run_split
from cifar_app.engine.loop import train
from cifar_app.labels import main as labels_main
from cifar_app.store.records import load_predictions
from cifar_app.store.runs import RunStore
from conftest import make_images, tiny_cifar, tiny_config, write_batches

N = 200  # the tiny training set's images


def own_labels() -> np.ndarray:
    return make_images(20, seed=1)[1]


def test_a_csv_of_numbers_or_class_names_with_or_without_a_header(tmp_path):
    own = own_labels()
    path = tmp_path / "set.csv"
    path.write_text("index,label\n" + "".join(f"{i},{CLASSES[c] if i % 2 else c}\n" for i, c in enumerate(own)))
    assert np.array_equal(read_label_file(path, N), own)
    path.write_text("".join(f"{i},{c}\n" for i, c in reversed(list(enumerate(own)))))  # any order, no header
    assert np.array_equal(read_label_file(path, N), own)


def test_a_numpy_array_and_cifar10n_style_pt_file_with_its_key(tmp_path):
    own = own_labels()
    np.save(tmp_path / "set.npy", own)
    assert np.array_equal(read_label_file(tmp_path / "set.npy", N), own)
    noisy = own.copy()
    noisy[:7] = (noisy[:7] + 1) % 10
    torch.save({"clean_label": own, "aggre_label": noisy}, tmp_path / "human.pt")  # numpy arrays, as CIFAR-10N's
    assert np.array_equal(read_label_file(tmp_path / "human.pt", N, key="aggre_label"), noisy)
    with pytest.raises(LabelSetError, match="pick one with --key"):
        read_label_file(tmp_path / "human.pt", N)
    with pytest.raises(LabelSetError, match="'worse' is not one of them"):
        read_label_file(tmp_path / "human.pt", N, key="worse")


@pytest.mark.parametrize("write, message", [
    (lambda p: np.save(p / "f.npy", np.zeros(N + 1, dtype=np.int64)), "has 201 labels but the training set has 200"),
    (lambda p: np.save(p / "f.npy", np.full(N, 10)), "labels outside the 10 classes"),
    (lambda p: np.save(p / "f.npy", np.zeros((N, 2))), "a label set is one label per image"),
    (lambda p: (p / "f.npy").write_bytes(b"not numpy at all"), "cannot be read as labels"),
    (lambda p: (p / "f.pt").write_bytes(b"not a torch file"), "cannot be read as a saved dict"),
    (lambda p: (p / "f.csv").write_text("0,cat\n0,dog\n"), "names image 0 twice"),
    (lambda p: (p / "f.csv").write_text("0,cat\n1,dog\n"), "labels 2 of the 200 training images"),
    (lambda p: (p / "f.csv").write_text("0,zebra\n"), "neither a class number nor one of"),
    (lambda p: (p / "f.txt").write_text("0,cat\n"), "a label set is a .csv"),
])
def test_a_bad_label_file_is_refused_with_a_sentence(tmp_path, write, message):
    write(tmp_path)
    (path,) = tmp_path.iterdir()
    with pytest.raises(LabelSetError, match=message):
        read_label_file(path, N)


def test_the_edit_log_makes_versions_and_undo_puts_back_what_the_latest_changed(tmp_path):
    own = own_labels()
    store = LabelStore(tmp_path)
    label_set = store.create("mine", own, own, "test")
    first = label_set.edit([("train", 3, (own[3] + 1) % 10), ("train", 5, EXCLUDED)], why="looked at them")
    second = label_set.edit([("train", 7, int(own[7]))], why="kept")
    assert (first.version, second.version, label_set.latest) == (1, 2, 2)
    assert label_set.reviewed() == {3: "relabel", 5: "exclude", 7: "keep"}
    labels = label_set.labels()
    assert labels[3] == (own[3] + 1) % 10 and labels[5] == EXCLUDED and np.array_equal(label_set.labels(0), own)
    undone = label_set.undo()
    assert undone.undoes == 2 and label_set.latest == 3
    undone = label_set.undo()  # walks further back: version 1
    assert undone.undoes == 1 and np.array_equal(label_set.labels(), own)
    assert np.array_equal(label_set.labels(1), labels)  # an earlier version reads as it was
    with pytest.raises(LabelSetError, match="no edit to undo"):
        label_set.undo()
    lines = (label_set.path / "edits.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["edits"][0] == {"split": "train", "index": 3, "old": int(own[3]),
                                                                    "new": int((own[3] + 1) % 10)}
    (label_set.path / "edits.jsonl").write_text("\n".join(lines) + '\n{"version": 5, "cut sho')  # a crash mid-line
    assert label_set.latest == 4


def test_a_set_made_for_other_labels_or_images_is_refused(tmp_path):
    own = own_labels()
    LabelStore(tmp_path).create("mine", own, own, "test")
    with pytest.raises(LabelSetError, match="made for a copy of CIFAR-10 whose images are in another order"):
        apply_label_set("mine", tmp_path, own[::-1].copy())
    with pytest.raises(LabelSetError, match="there is no label set 'other'"):
        apply_label_set("other", tmp_path, own)
    with pytest.raises(LabelSetError, match="versions 0 to 0, not 3"):
        apply_label_set("mine@3", tmp_path, own)


def test_folds_partition_the_images_whatever_the_seed():
    held = [fold_indices(N, 4, fold)[1] for fold in range(4)]
    assert sorted(torch.cat(held).tolist()) == list(range(N))
    train_idx, val_idx = run_split(N, 0, seed=5, folds=4, fold=2)
    assert set(val_idx.tolist()) == set(held[2].tolist()) and not set(train_idx.tolist()) & set(val_idx.tolist())
    keep = torch.ones(N, dtype=torch.bool)
    keep[held[2][:3]] = False
    assert len(run_split(N, 0, 0, folds=4, fold=2, keep=keep)[1]) == len(held[2]) - 3


def test_a_run_trains_on_a_label_set_leaves_excluded_images_out_and_records_the_set(tmp_path):
    data, own = tiny_cifar(), own_labels()
    assert np.array_equal(data.train_labels.numpy(), own)
    label_set = LabelStore(tmp_path / "data").create("mine", own, own, "test")
    label_set.edit([("train", i, EXCLUDED) for i in range(10)] + [("train", 20, (own[20] + 1) % 10)])
    config = tiny_config(epochs=1, labels="mine", folds=4, fold=1, data_dir=str(tmp_path / "data"))
    result = train(config, data=data, store=RunStore(tmp_path / "runs"))
    assert result.status == "finished", result.reason
    record = result.run.config_record()
    assert record["labels"]["name"] == "mine" and record["labels"]["version"] == 1
    assert record["labels"]["excluded"] == 10 and record["labels"]["fingerprint"] == label_set.fingerprint()
    train_idx, held = run_split(N, 0, 0, folds=4, fold=1, keep=torch.from_numpy(label_set.labels() != EXCLUDED))
    assert record["train_images"] == len(train_idx) and record["val_images"] == len(held)
    saved = load_predictions(result.run.path)
    assert sorted(saved["heldout_index"].tolist()) == sorted(held.tolist())
    assert saved["heldout_probs"].shape == (len(held), 10) and saved["test_probs"].shape == (100, 10)
    assert np.allclose(saved["heldout_probs"].sum(1), 1, atol=1e-2)
    labels = np.load(result.run.path / "dynamics" / "train_labels.npy")
    index = np.load(result.run.path / "dynamics" / "train_index.npy")
    assert np.array_equal(labels, label_set.labels()[index]) and not set(range(10)) & set(index.tolist())
    own_run = train(config.replace(labels=""), data=data, store=RunStore(tmp_path / "runs")).run
    differences = compare.config_differences([result.run, own_run])  # the Runs page's "What differs"
    assert differences.loc["labels"].tolist() == ["mine@1 (fold 2 of 4 held out)", "own (fold 2 of 4 held out)"]


def test_a_label_set_that_does_not_fit_ends_the_run_before_it_starts(tmp_path):
    own = own_labels()
    LabelStore(tmp_path / "data").create("other", own[::-1].copy(), own[::-1].copy(), "test")
    with pytest.raises(ConfigError, match="made for a copy of CIFAR-10"):
        train(tiny_config(labels="other", data_dir=str(tmp_path / "data")), data=tiny_cifar())


def test_the_command_line_imports_lists_and_undoes(tmp_path, capsys):
    write_batches(tmp_path / "data")
    own = own_labels()
    noisy = own.copy()
    noisy[:5] = (noisy[:5] + 1) % 10
    torch.save({"aggre_label": noisy, "clean_label": own}, tmp_path / "human.pt")
    base = ["--data-dir", str(tmp_path / "data")]
    assert labels_main([*base, "import", str(tmp_path / "human.pt"), "--key", "aggre_label", "--name", "c10n"]) == 0
    assert "2.5% differ" in capsys.readouterr().out
    assert labels_main([*base, "import", str(tmp_path / "human.pt"), "--name", "again"]) == 1
    assert "pick one with --key" in capsys.readouterr().out
    assert labels_main([*base, "list"]) == 0
    assert "c10n@0: 200 labels" in capsys.readouterr().out
    LabelStore(tmp_path / "data").get("c10n").edit([("train", 0, EXCLUDED)], why="blurry")
    assert labels_main([*base, "undo", "c10n"]) == 0 and "undo version 1" in capsys.readouterr().out
    assert labels_main([*base, "log", "c10n"]) == 0
    assert "c10n@2" in capsys.readouterr().out
