"""Shared by the Samples, Evaluate and Predict pages (not a page itself): the dataset, the model picker,
and the test-set predictions, each loaded once and kept in Streamlit's resource cache.

Cache keys name what the object was made from: the data root; a run's id, checkpoint and the checkpoint
file's mtime (a run still training writes a new best.pt, and its mtime makes a new key); or the sha256 of
an uploaded checkpoint. A rerun therefore never loads or predicts twice, and a changed file is never stale.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from cifar_app.analysis import metrics
from cifar_app.analysis.predict import predict
from cifar_app.store.checkpoints import CheckpointError, LoadedModel, load_model_file, load_run_model
from cifar_app.data.dataset import Cifar10
from cifar_app.data.formats import DataFormatError, DataNotFound, data_status
from cifar_app.device import pick_device
from cifar_app.store.report import run_row
from cifar_app.store.runs import Run, RunStore
from ui.common import data_dir, dataset, runs_store

UPLOAD = "upload"
HOW_TO_TRAIN = (
    "Train one on the **Train** page (the `quick` preset takes a few minutes on a CPU), or from a terminal "
    "with `python -m cifar_app.train --preset quick`; or choose **Upload a checkpoint** and hand in a model "
    "file exported from the Runs page."
)


@dataclass
class ModelChoice:
    key: str  # what the model was loaded from, unique per file version
    loaded: LoadedModel
    label: str  # for captions and file names
    run_id: str | None = None


def get_data() -> Cifar10 | None:
    """The dataset, or None after telling the user where it was looked for and how to get it."""
    found, root = data_status(data_dir())
    if found is None:
        st.info(
            f"No CIFAR-10 here yet (looked under `{root}`). Download it with the sidebar's button, or extract a "
            "copy under the data root (CIFAR_DATA_DIR) and choose it in the sidebar."
        )
        with st.expander("Where it was looked for, and every way to get it"):
            st.code(str(DataNotFound(root)), language=None)
        return None
    try:
        return dataset()
    except (DataNotFound, DataFormatError) as error:
        st.error(str(error))
        return None


def device():
    return pick_device("auto")


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _load_run(key: str, root: str, run_id: str, which: str) -> LoadedModel:
    return load_run_model(RunStore(root).get(run_id), which, device())


@st.cache_resource(show_spinner="Reading the checkpoint…", max_entries=2)
def _load_upload(key: str, _data: bytes, name: str) -> LoadedModel:
    return load_model_file(_data, device(), name)


@st.cache_resource(show_spinner="Predicting the test set (once per model)…", max_entries=4)
def _predictions(key: str, data_source: str, _loaded: LoadedModel, _data: Cifar10) -> metrics.Predictions:
    # with the run's own test-time flip, so the page's accuracy is the one the run reported
    return predict(_loaded.model, _data.test_images, _data.test_labels, device(), _loaded.classes,
                            tta_flip=_loaded.config.tta_flip)


def test_predictions(choice: ModelChoice, data: Cifar10) -> metrics.Predictions:
    """The model's probabilities for the whole test split, computed once per (model file, dataset)."""
    return _predictions(choice.key, data.source, choice.loaded, data)


@st.cache_data(show_spinner=False, max_entries=4)
def predictions_csv(key: str, data_source: str, _preds: metrics.Predictions) -> bytes:
    return metrics.predictions_csv(_preds)


def _models(store: RunStore) -> list[Run]:
    return [r for r in store.runs() if r.has_checkpoint("best") or r.has_checkpoint("last")]


def _opening_run(runs: list[Run], rows: dict[str, dict]) -> int:
    """Which run the picker opens on: the finished run with the best test accuracy, else the best stopped or
    interrupted run that finished an epoch, else the newest (ties go to the newer run)."""
    for statuses in (("finished",), ("stopped", "interrupted")):
        scored = [(rows[r.id]["best_test_acc"], -i) for i, r in enumerate(runs)
                  if rows[r.id]["status"] in statuses and rows[r.id]["best_test_acc"] is not None]
        if scored:
            return -max(scored)[1]
    return 0


def _describe(row: dict) -> str:
    best = f" · test {row['best_test_acc']:.2f}% at its best epoch" if row["best_test_acc"] is not None else ""
    return f"{row['name']} · {row['status']} · {row['epochs']} epochs{best}"


def pick_model(page: str) -> ModelChoice | None:
    """The model picker: a saved run (the best finished one first) or an uploaded checkpoint.

    Returns None, after saying what to do, while there is no usable model.
    """
    store = runs_store()
    runs = _models(store)
    by_id = {r.id: r for r in runs}
    options = [r.id for r in runs] + [UPLOAD]
    asked = st.query_params.get("run")  # the Train page's "Evaluate this run" link names its run
    rows = {r.id: run_row(r) for r in runs}
    default = options.index(asked) if asked in by_id else _opening_run(runs, rows)
    labels = {r.id: _describe(rows[r.id]) for r in runs}
    wanted = st.query_params.get("run")
    if wanted is not None:  # a link from the Train or Runs page names the run: pick it once
        if wanted in by_id:
            default = options.index(wanted)
        del st.query_params["run"]
    left, right = st.columns([3, 1])
    choice = left.selectbox(
        "Model", options, index=default, key=f"{page}_model",
        format_func=lambda o: "Upload a checkpoint…" if o == UPLOAD else labels.get(o, o),
        help="A saved run from the run store, or a model file exported from the Runs page.",
    )
    if choice == UPLOAD:
        if not runs:
            st.info(f"No trained model yet. {HOW_TO_TRAIN}")
        file = st.file_uploader("Model checkpoint (.pt)", type=["pt", "pth"], key=f"{page}_checkpoint")
        if file is None:
            return None
        raw = file.getvalue()
        key = "upload:" + hashlib.sha256(raw).hexdigest()
        try:
            loaded = _load_upload(key, raw, file.name)
        except CheckpointError as error:
            st.error(str(error))
            return None
        return ModelChoice(key, loaded, Path(file.name).stem)

    run = by_id[choice]
    saved = [which for which in ("best", "last") if run.has_checkpoint(which)]
    if len(saved) == 2:
        which = right.radio(
            "Checkpoint", saved, horizontal=True, key=f"{page}_which",
            help="best: the epoch with the highest test (or validation) accuracy; last: where training ended.",
        )
    else:  # the control shows what is loaded: no 'best' over a caption that says 'last'
        which = saved[0]
        right.caption(f"Checkpoint: **{which}**, the only one this run has saved.")
    path = run.checkpoint_path(which)
    try:
        key = f"run:{run.path.resolve()}:{which}:{path.stat().st_mtime_ns}"
        loaded = _load_run(key, str(store.root), run.id, which)
    except (CheckpointError, OSError) as error:
        st.error(f"Run {run.name} cannot be loaded: {error}")
        return None
    return ModelChoice(key, loaded, f"{run.id}-{which}", run.id)
