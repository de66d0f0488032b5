"""K-fold cross-validation runs for label-error search: K ordinary training runs of one recipe on one label set,
each holding one fold of the training images out (TrainConfig's `folds`/`fold`; data/loader.py's partition), so
that every training image gets class probabilities from a model that never saw it (store/records.py's
predictions file). They are started one after the other through the app's launcher, as the sweep workers are
(a process each, the trainer's own command line), and a run already finished with the same recipe and labels is
used again instead of trained twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from cifar_app.config import RUNTIME_FIELDS, TrainConfig
from cifar_app.engine.launcher import last_line, start_training
from cifar_app.store.live import LOG_FILE
from cifar_app.store.runs import Run, RunStore

log = logging.getLogger(__name__)
DEFAULT_FOLDS = 4
WAIT_S = 5.0  # how often a run trained by another process is looked at
# What the fold runs change in the recipe they are given: their held-out fold's probabilities averaged with those of
# the mirror images (steadier probabilities, a better ranking of label errors: docs/labels.md).
FOLD_RECIPE = {"tta_flip": True, "val_size": 0, "records": True}


def labels_spec(run: Run) -> str:
    """The label set a run trained on, pinned to the version it used ('' for the dataset's own labels)."""
    record = run.config_record().get("labels")
    return f"{record['name']}@{record['version']}" if record else ""


def fold_config(config: TrainConfig, folds: int, fold: int, labels: str) -> TrainConfig:
    base = config.name or "run"
    return config.replace(**FOLD_RECIPE, folds=folds, fold=fold, labels=labels, time_budget=0.0,
                          name=f"{base}-fold{fold + 1}of{folds}")


def _same_recipe(a: TrainConfig, b: TrainConfig) -> bool:
    return all(name in RUNTIME_FIELDS for name in a.differences(b))


def finished_run(store: RunStore, config: TrainConfig) -> Run | None:
    """The newest finished run in `store` trained with exactly `config`'s recipe and labels (where it ran aside)."""
    for run in store.runs():  # newest first
        try:
            if run.status() == "finished" and _same_recipe(run.config(), config):
                return run
        except (OSError, ValueError, KeyError):
            continue
    return None


def ensure_run(store: RunStore, config: TrainConfig, say: Callable[[str], None] = log.info) -> Run:
    """A finished run of `config`: one trained before, or a new one trained now in a process of its own (this
    waits for it). Raises RuntimeError with the reason when it does not finish."""
    run = finished_run(store, config)
    if run is not None:
        say(f"{config.name or 'run'}: {run.id} (trained before)")
        return run
    running = next((r for r in store.running() if _same_recipe(r.config(), config)), None)
    if running is not None:  # started by another search, or by one that was interrupted: wait for it
        say(f"{config.name or 'run'}: waiting for {running.id}, which trains it now")
        while running.status() == "running":
            time.sleep(WAIT_S)
        if running.status() == "finished":
            return running
    folder = store.reserve(config.name)
    say(f"{config.name or 'run'}: training {folder.name} (its output: {folder / LOG_FILE})")
    process, _ = start_training(config, store.root, folder.name)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()  # the run stops within a batch, keeping its checkpoint
        process.wait()
        raise
    run = Run(folder)
    if code != 0 or run.status() != "finished":
        reason = run.meta().get("reason") or last_line(folder / LOG_FILE) or "no output"
        raise RuntimeError(f"run {folder.name} did not finish ({run.status()}): {reason}")
    return run


def fold_runs(store: RunStore, config: TrainConfig, folds: int, labels: str) -> dict[int, Run]:
    """The finished fold runs of `config` on `labels` in `store`, by fold (those not trained yet are absent)."""
    found = {fold: finished_run(store, fold_config(config, folds, fold, labels)) for fold in range(folds)}
    return {fold: run for fold, run in found.items() if run is not None}


def run_folds(store: RunStore, config: TrainConfig, folds: int = DEFAULT_FOLDS, labels: str = "",
              say: Callable[[str], None] = log.info) -> list[Run]:
    """The K finished fold runs of `config` on `labels` (a label set's NAME@VERSION, '' for the dataset's own),
    training those not found in `store`, one after the other."""
    return [ensure_run(store, fold_config(config, folds, fold, labels), say) for fold in range(folds)]

