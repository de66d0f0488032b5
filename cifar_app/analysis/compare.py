"""Runs side by side: the runs table as a frame, their curves on shared axes, what differs between their
configs, and the runs that train in other processes. Pure reads of the run store; the Runs and Train pages
draw what these return.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from datetime import datetime
from typing import Any

import pandas as pd

from cifar_app.config import LABEL_FIELDS, RUNTIME_FIELDS, TrainConfig
from cifar_app.store.report import labels_text, run_row
from cifar_app.store.runs import Run, RunStore

METRICS = ("test_acc", "val_acc", "train_acc", "train_loss")  # the per-epoch figures a comparison can draw
CURVE_COLUMNS = ["run", "run_id", "epoch", *METRICS]
# Not hyperparameters (the name labels the column already; the data folder is a path on one machine).
NOT_COMPARED = ("name", "data_dir")
TABLE_COLUMNS = ["name", "status", "progress", "preset", "labels", "width", "optimizer", "lr", "batch_size", "schedule", "epochs",
                 "best_test_acc", "best_epoch", "best_by", "final_test_acc", "final_train_acc", "seconds", "device",
                 "started", "forked_from", "id"]


def run_labels(runs: list[Run]) -> dict[str, str]:
    """A label per run id for legends and columns: the name, with the id added where two runs share one."""
    names = {run.id: run.name for run in runs}
    counts = pd.Series(list(names.values())).value_counts()
    return {rid: name if counts[name] == 1 else f"{name} ({rid})" for rid, name in names.items()}


def table_rows(runs: list[Run]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(report.run_row of each readable run, {run id: why not} for folders that cannot be read, e.g. a config
    edited by hand or a folder half copied)."""
    rows, unreadable = [], {}
    for run in runs:
        try:
            rows.append({**run_row(run), "progress": run.progress()})
        except (OSError, ValueError, TypeError, KeyError) as error:
            unreadable[run.id] = f"{type(error).__name__}: {error}"
    return rows, unreadable


def table_frame(rows: list[dict[str, Any]], names: dict[str, str] | None = None) -> pd.DataFrame:
    """The runs table (report.runs_table rows) as a frame of the columns the Runs page shows, one per run."""
    names = names or {}
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    frame["started"] = [datetime.fromtimestamp(t) if t else pd.NaT for t in frame["started"]]
    frame["forked_from"] = [
        f"{names.get(p, p)} @ {int(e)}" if p else "" for p, e in zip(frame["parent"], frame["parent_epoch"])
    ]
    return frame[TABLE_COLUMNS]


def curves(runs: list[Run], store: RunStore, labels: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-epoch curves, branch points) of `runs` for one chart.

    curves: one row per run and epoch (CURVE_COLUMNS). A fork's curve starts at its branch epoch with its
    parent's values there (when the parent is still in the store), so the line visibly leaves the parent's.
    branch points: one row per fork (run, run_id, epoch, parent, and the parent's metrics at that epoch).
    """
    labels = labels or run_labels(runs)
    frames, branches = [], []
    for run in runs:
        rows = run.metrics()
        origin = run.parent()
        if origin is not None:
            parent_id, epoch, which = origin
            try:
                parent = store.get(parent_id)
                at = next((r for r in parent.metrics() if r["epoch"] == epoch), {"epoch": epoch})
                parent_name = parent.name
            except KeyError:  # the parent was deleted: mark the branch epoch without a value
                at, parent_name = {"epoch": epoch}, f"{parent_id} (deleted)"
            branch = {"run": labels[run.id], "run_id": run.id, "parent": parent_name, "checkpoint": which,
                      **{k: at.get(k) for k in ("epoch", *METRICS)}}
            branches.append(branch)
            rows = [{k: at.get(k) for k in ("epoch", *METRICS)}, *rows]
        frame = pd.DataFrame(rows, columns=["epoch", *METRICS])
        frames.append(frame.assign(run=labels[run.id], run_id=run.id))
    curve_frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLUMNS)
    curve_frame = curve_frame[CURVE_COLUMNS].astype({k: "float64" for k in METRICS})
    branch_frame = pd.DataFrame(branches, columns=["run", "run_id", "parent", "checkpoint", "epoch", *METRICS])
    return curve_frame, branch_frame.astype({k: "float64" for k in METRICS})


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _run_name(store: RunStore | None, run_id: str) -> str:
    try:
        return store.get(run_id).name if store is not None else run_id
    except KeyError:
        return f"{run_id} (deleted)"


def config_differences(runs: list[Run], labels: dict[str, str] | None = None,
                       store: RunStore | None = None) -> pd.DataFrame:
    """The hyperparameters (and device, data, parent) whose values differ between `runs`: one row each, one
    column per run, values as text. Empty (no rows) when the runs were configured alike. With `store`, a
    fork's parent is named rather than given by id."""
    labels = labels or run_labels(runs)
    names = [f.name for f in fields(TrainConfig) if f.name not in NOT_COMPARED]
    table: dict[str, list[str]] = {}
    for run in runs:
        config, record = run.config(), run.config_record()
        origin = run.parent()
        values = {name: getattr(config, name) for name in names}
        if "labels" in values:  # as the Runs table names them ('own', not an empty cell)
            values["labels"] = labels_text(record.get("labels"), config)
        values["device used"] = record.get("device", "")
        values["data"] = record.get("data_source", "")
        values["forked from"] = f"{_run_name(store, origin[0])} @ epoch {origin[1]} ({origin[2]})" if origin else "none"
        table[labels[run.id]] = [_shown(v) for v in values.values()]
    index = [*names, "device used", "data", "forked from"]
    frame = pd.DataFrame(table, index=pd.Index(index, name="hyperparameter"))
    if len(runs) < 2:
        return frame.iloc[0:0]
    return frame[frame.nunique(axis=1) > 1]


def running_elsewhere(store: RunStore, job_run: str = "") -> list[Run]:
    """Runs training now in another process (a terminal, another machine writing to the same folder) than this
    one and the app's own job (`job_run`, whose process the app started)."""
    return [run for run in store.running() if run.is_elsewhere() and run.id != job_run]


def elsewhere_line(run: Run) -> str:
    """'epoch 2 of 3, batch 40 of 97 · last test accuracy 54.10% · pid 4242 on host, last heard 12 s ago'."""
    rows, meta, epochs = run.metrics(), run.meta(), run.config().epochs
    done = rows[-1]["epoch"] if rows else (run.parent() or ("", 0))[1]
    tested = [r["test_acc"] for r in rows if r["test_acc"] is not None]
    beat = meta.get("progress") or {}
    if beat.get("batch") and beat.get("epoch", 0) > done:  # the heartbeat: batches of the epoch under way
        parts = [f"epoch {beat['epoch']} of {epochs}, batch {beat['batch']} of {beat['batches']}"]
    else:
        parts = [f"epoch {min(done + 1, epochs)} of {epochs}"]
    if tested:
        parts.append(f"last test accuracy {tested[-1]:.2f}%")
    heard = time.time() - float(meta.get("heartbeat", meta.get("updated", time.time())))
    parts.append(f"pid {meta.get('pid')} on {meta.get('host')}, last heard {heard:.0f} s ago")
    return " · ".join(parts)


def load_snippet(file_name: str) -> str:
    """The few lines that load an exported model with plain torch (and then run it with this repo's model)."""
    return f'''import torch

saved = torch.load("{file_name}", weights_only=True)  # tensors, numbers and strings only: safe to load
weights, config = saved["state_dict"], saved["config"]  # {{layer: tensor}}, the hyperparameters as a dict
print(saved["epoch"], saved["test_acc"], saved["classes"])

# to run it, this repository's model code (on the Python path) rebuilds the network:
from cifar_app.config import TrainConfig
from cifar_app.data.loader import normalize
from cifar_app.model.network import build_model

model = build_model(TrainConfig.from_dict(config)).eval()
model.load_state_dict(weights)
images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)  # yours: uint8 RGB, (N, 3, 32, 32)
with torch.no_grad():
    probabilities = model(normalize(images)).softmax(1)
print([saved["classes"][i] for i in probabilities.argmax(1)])
'''


def by_labels(runs: list[Run]) -> pd.DataFrame:
    """Runs of one recipe trained on other labels, side by side (clean / noisy / curated): one row per run of each
    recipe that has finished runs on at least two label choices; cross-validation runs aside. Columns: recipe (its
    first run's name), labels, final_test_acc, best_test_acc, run."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        try:
            config, meta, record = run.config(), run.meta(), run.config_record()
        except (OSError, ValueError, KeyError):
            continue
        if config.folds or meta.get("status") != "finished":
            continue
        recipe = {k: v for k, v in config.to_dict().items()
                  if k not in RUNTIME_FIELDS + LABEL_FIELDS + NOT_COMPARED}
        groups.setdefault(json.dumps(recipe, sort_keys=True), []).append(
            {"labels": labels_text(record.get("labels"), config), "final_test_acc": meta.get("final_test_acc"),
             "best_test_acc": meta.get("best_test_acc"), "run": run.name})
    rows = []
    for members in groups.values():
        if len({m["labels"] for m in members}) > 1:
            rows += [{"recipe": members[-1]["run"], **m} for m in sorted(members, key=lambda m: m["labels"])]
    return pd.DataFrame(rows, columns=["recipe", "labels", "final_test_acc", "best_test_acc", "run"])
