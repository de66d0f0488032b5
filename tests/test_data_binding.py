"""Runs bound to their data (issue 21): a run records which images it trained on (formats.data_fingerprint);
resuming it on another copy is refused with a sentence, a fork on other data says so and its per-image record
starts afresh."""

import json
import threading

import pytest

from cifar_app.data.dataset import Cifar10, load_cifar10
from cifar_app.engine.cli import main as train_cli
from cifar_app.engine.loop import train
from cifar_app.events import EpochEvent
from cifar_app.store.lineage import DataMismatch, fork_warnings
from cifar_app.store.records import RECORDS_DIR
from cifar_app.store.runs import RunStore
from conftest import tiny_cifar, tiny_config, write_batches, write_binary, write_folder


def relabelled(data: Cifar10) -> Cifar10:
    """The same images with the training labels moved on by one class: another data set to the run."""
    return Cifar10(data.train_images, (data.train_labels + 1) % 10, data.test_images, data.test_labels, "relabelled")


def stopped_run(store: RunStore, data: Cifar10):
    """A run stopped after its first of two epochs: one to resume."""
    stop = threading.Event()
    result = train(tiny_config(name="half"), data=data, store=store, stop=stop,
                   on_event=lambda e: stop.set() if isinstance(e, EpochEvent) else None)
    assert result.status == "stopped"
    return result.run


def origin(run) -> str:
    """Where a run's per-image record begins, as its meta.json says (the Dynamics page shows it)."""
    return json.loads((run.path / RECORDS_DIR / "meta.json").read_text())["origin"]


def test_the_fingerprint_names_the_images_and_labels_not_the_format(tmp_path, tiny_binary_release):
    write_batches(tmp_path / "batches")
    write_binary(tmp_path / "binary")
    batches, binary = load_cifar10(tmp_path / "batches"), load_cifar10(tmp_path / "binary")
    folder = load_cifar10(write_folder(tmp_path / "folder"))  # the same images, in class order
    assert batches.fingerprint == binary.fingerprint  # one release, two lossless formats
    assert folder.fingerprint != batches.fingerprint
    assert relabelled(batches).fingerprint != batches.fingerprint


def test_a_run_records_its_data_and_refuses_to_resume_on_other_data(tmp_path):
    data, store = tiny_cifar(), RunStore(tmp_path / "runs")
    run = stopped_run(store, data)
    assert run.config_record()["data_fingerprint"] == data.fingerprint
    with pytest.raises(DataMismatch, match=r"half cannot be resumed on this data: it trained on other data"):
        train(run.config(), data=relabelled(data), store=store, resume=run)
    assert run.status() == "stopped" and len(run.metrics()) == 1  # nothing was touched
    assert train(run.config(), data=data, store=store, resume=run).status == "finished"


def test_the_cli_refuses_a_resume_on_another_copy_with_the_sentence(tmp_path, capsys):
    data, store = tiny_cifar(), RunStore(tmp_path / "runs")
    run = stopped_run(store, data)
    write_folder(tmp_path / "folder")  # the same images in another order
    code = train_cli(["--resume", run.id, "--runs-dir", str(store.root), "--data-dir", str(tmp_path / "folder")])
    assert code == 1 and "cannot be resumed on this data" in capsys.readouterr().out
    assert run.status() == "stopped"


def test_a_fork_on_other_data_says_so_and_its_record_starts_afresh(tmp_path):
    data, store = tiny_cifar(), RunStore(tmp_path / "runs")
    parent = train(tiny_config(epochs=1, name="parent"), data=data, store=store).run
    other = relabelled(data)
    assert any("not the data the parent trained on" in w for w in fork_warnings(parent, tiny_config(), other.fingerprint))
    assert not fork_warnings(parent, tiny_config(), data.fingerprint)
    same = train(tiny_config(epochs=2, name="same"), data=data, store=store, fork=(parent, "last")).run
    fork = train(tiny_config(epochs=2, name="fork"), data=other, store=store, fork=(parent, "last")).run
    assert origin(same).startswith("fork of run")
    assert "on other data than its parent's: its record begins afresh" in origin(fork)
