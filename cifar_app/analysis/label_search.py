"""The search for a run's wrong labels, end to end: the run's training dynamics, K fold runs of its recipe on its
labels (engine/folds.py, trained as needed) for out-of-sample probabilities, the detectors of label_errors.py on
the training and the test images, saved with the run; and accepting the top suggestions into a label set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cifar_app.analysis.dynamics import NO_RECORDS, Records, image_table, load_records
from cifar_app.analysis.label_errors import (
    RESULTS_DIR,
    DETECTORS,
    RANKING,
    detect,
    flagged,
    load_results,
    load_summary,
    save_results,
    suggestion_changes,
)
from cifar_app.data.formats import CLASSES
from cifar_app.data.labels import LabelSetError, LabelStore, parse_spec
from cifar_app.atomic import atomic_write_json
from cifar_app.engine.folds import DEFAULT_FOLDS, labels_spec, run_folds
from cifar_app.engine.launcher import last_line, start_process
from cifar_app.store.liveness import process_alive, process_start
from cifar_app.store.records import load_predictions
from cifar_app.store.runs import Run, RunStore


def out_of_fold(fold_runs: list[Run]) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """({training image index: its held-out probabilities}, the test set's probabilities averaged over the folds)."""
    held: dict[int, np.ndarray] = {}
    tests = []
    for run in fold_runs:
        saved = load_predictions(run.path)
        if saved is None:
            raise RuntimeError(f"fold run {run.name} saved no predictions: it was trained before this app kept them.")
        held.update(zip(saved["heldout_index"].tolist(), saved["heldout_probs"]))
        tests.append(saved["test_probs"])
    return held, np.mean(tests, axis=0) if tests else None


def train_table(records: Records, held: dict[int, np.ndarray], method: str = RANKING) -> pd.DataFrame:
    """The detectors on the run's recorded training images that have a held-out prediction."""
    dyn = image_table(records)
    dyn = dyn[dyn["index"].isin(list(held))]
    rows = dyn.index.to_numpy()  # rows of the record's arrays
    index = records.train_index[rows]
    probs = np.stack([held[int(i)] for i in index])
    looks = np.array([records.classes.index(c) for c in dyn["looks_like"]])
    return detect(index, records.train_labels[rows], probs, dyn["mislabel_score"].to_numpy(),
                  dyn["confidence"].to_numpy(), looks, records.classes, method)


def test_table(records: Records, test_probs: np.ndarray, method: str = RANKING) -> pd.DataFrame:
    """The detectors on the test images: the fold models' mean probabilities (each model is out of sample on the
    test set), and as the dynamics score 0.5 minus the label's mean probability over the run's tested epochs."""
    p_true = records.test_p_true.mean(0) if len(records.test_epochs) else np.full(len(records.test_labels), 0.5)
    return detect(np.arange(len(records.test_labels)), records.test_labels, test_probs, 0.5 - p_true, p_true,
                  classes=records.classes, method=method)


def find_label_errors(run_id: str, runs_dir: str | None = None, data_dir: str | None = None,
                      folds: int = DEFAULT_FOLDS, say: Callable[[str], None] = print) -> str:
    """Search the labels `run_id` trained on: train (or find) its K fold runs, score, save with the run; returns a
    summary in a few lines. RuntimeError with a sentence when it cannot."""
    store = RunStore(runs_dir)
    run = store.get(run_id)
    records = load_records(run.path)
    if records is None or not len(records.epochs):
        raise RuntimeError(NO_RECORDS.format(run_id=run.id).replace("`", ""))
    config = run.config().replace(name=run.name)
    if data_dir:
        config = config.replace(data_dir=data_dir)
    spec = labels_spec(run)
    fold_list = run_folds(store, config, folds, spec, say)
    held, test_probs = out_of_fold(fold_list)
    train = train_table(records, held)
    test = test_table(records, test_probs) if test_probs is not None else None
    summary = {"when": time.time(), "labels": spec, "folds": folds, "fold_runs": [r.id for r in fold_list],
               "ranking": RANKING, "images": len(train),
               "flagged": {d: int(train[f"{d}_flag"].sum()) for d in DETECTORS},
               "test_flagged": {d: int(test[f"{d}_flag"].sum()) for d in DETECTORS} if test is not None else {}}
    folder = save_results(run.path, train, test, summary)
    counts = ", ".join(f"{d} {n:,}" for d, n in summary["flagged"].items())
    return (f"{len(train):,} training images of {run.name} ({spec or 'the dataset own labels'}) searched; flagged: "
            f"{counts}. Saved in {folder}.")


def accept_suggestions(label_set_store: LabelStore, table: pd.DataFrame, top: int, labels: str,
                       own: np.ndarray | None, classes: tuple[str, ...], why: str) -> str:
    """Relabel the `top` likeliest flagged images of a search's `table` as suggested, as a new version of the set
    `labels` ('' = the set of the dataset's own labels, made from `own` on first use)."""
    chosen = flagged(table).head(top)
    if chosen.empty:
        raise LabelSetError("the search flagged no image: nothing to accept.")
    name = parse_spec(labels)[0] if labels else ""
    if name:
        label_set = label_set_store.get(name)
    elif own is not None:
        label_set = label_set_store.own_set(own)
    else:
        raise LabelSetError("the run trained on the dataset's own labels: load the data to make their set first.")
    entry = label_set.edit(suggestion_changes(chosen, classes), why=why, action="accept")
    return f"{label_set.name}@{entry.version}: {len(chosen):,} suggestions accepted. {label_set.describe()}"


def accept_top(run_id: str, top: int, runs_dir: str | None = None, data_dir: str | None = None,
               into: str | None = None) -> str:
    """`python -m cifar_app.labels accept RUN --top N`."""
    run = RunStore(runs_dir).get(run_id)
    table = load_results(run.path)
    if table is None:
        raise RuntimeError(f"no label-error search saved for {run.name}: python -m cifar_app.labels find {run.id}")
    data_dir = data_dir or run.config().data_dir
    labels = into or labels_spec(run)
    own = None
    if not labels:
        from cifar_app.data.dataset import load_cifar10

        own = load_cifar10(data_dir).train_labels.numpy()
    summary = load_summary(run.path) or {}
    records = load_records(run.path)
    why = f"top {top} suggestions of the search of {run.name}" + (f" ({summary['folds']} folds)" if summary else "")
    return accept_suggestions(LabelStore(data_dir), table, top, labels, own,
                              records.classes if records is not None else CLASSES, why)


# -- a search in a process of its own (the Dynamics page's button) ---------------------------------------------

SEARCH_FILE = "search.json"  # in the run's label-errors folder: the search process, while and after it runs
SEARCH_LOG = "search.log"


def start_search(run: Run, runs_dir: str | Path, data_dir: str, folds: int = DEFAULT_FOLDS) -> int:
    """`python -m cifar_app.labels find RUN` in a process of its own (the app's launcher), its output in the run's
    label-errors folder; returns its pid. The app's server only watches the files it writes."""
    folder = run.path / RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    args = ["cifar_app.labels", "--runs-dir", str(Path(runs_dir).resolve()), "--data-dir", str(data_dir), "find",
            run.id, "--folds", str(folds)]
    (folder / SEARCH_LOG).unlink(missing_ok=True)
    process = start_process(args, folder / SEARCH_LOG)
    atomic_write_json(folder / SEARCH_FILE, {"pid": process.pid, "pid_start": process_start(process.pid),
                                             "started": time.time(), "folds": folds})
    return process.pid


def search_state(run: Run) -> tuple[str, str]:
    """('running' | 'ended' | '', the search log's last line): how the latest search of this run is going."""
    folder = run.path / RESULTS_DIR
    try:
        launch = json.loads((folder / SEARCH_FILE).read_text())
    except (OSError, ValueError):
        return "", ""
    alive = process_alive(launch["pid"], launch.get("pid_start"))
    return ("running" if alive else "ended"), last_line(folder / SEARCH_LOG) or "starting"
