"""The run store: one folder per training run, readable at any moment.

    runs/<run id>/
      config.json    the TrainConfig, plus the seed, device, library versions and data source (meta.json)
      meta.json      status (running/finished/stopped/failed), reason, pid, host, heartbeat, timings
      metrics.csv    one row per finished epoch, rewritten atomically as epochs end
      last.pt        model, optimizer, scheduler and loop state at the last saved point (resume)
      best.pt        the same at the best epoch (by validation accuracy when there is a validation split)

Every write goes to a temporary file in the same folder and then `os.replace`s the old one, so a crash at
any moment leaves either the old or the new file, never half of one. A run whose process died while it
was `running` shows as `interrupted`, as the one liveness rule (store/liveness.py) judges it. meta.json is
rewritten under a lock, so the heartbeat of a training process never undoes a rename made meanwhile.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from cifar_app.atomic import atomic_torch_save, atomic_write_json, atomic_write_text, file_lock
from cifar_app.config import TrainConfig
from cifar_app.events import METRIC_FIELDS
from cifar_app.store.liveness import STALE_AFTER_S, dead_reason, process_start

STATUSES = ("running", "finished", "stopped", "failed", "interrupted")


def default_runs_dir() -> Path:
    return Path(os.environ.get("CIFAR_RUNS_DIR", "runs"))


def _number(text: str) -> float | int | None:
    if text in ("", "None", "nan"):
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


@dataclass(frozen=True)
class Run:
    """One run folder. Cheap to create; every property reads the disk."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    # -- config and meta
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(json.loads((self.path / "config.json").read_text())["config"])

    def config_record(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    def meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "meta.json").read_text())
        except (OSError, ValueError):
            return {}

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into meta.json: read, change and write under a lock, so that two writers (the
        training heartbeat, a rename from the dashboard) never lose each other's change."""
        with file_lock(self.path / ".meta.lock"):
            meta = {**self.meta(), **changes, "updated": time.time()}
            atomic_write_json(self.path / "meta.json", meta)
        return meta

    def claim(self, **changes: Any) -> None:
        """Mark the run as training in this process (a new run, or a resumed one)."""
        pid = os.getpid()
        self.update_meta(status="running", reason="", pid=pid, pid_start=process_start(pid),
                         host=socket.gethostname(), **changes)

    def heartbeat(self, **changes: Any) -> None:
        """The training process is alive (and, in `changes`, where it is)."""
        self.update_meta(heartbeat=time.time(), **changes)

    @property
    def name(self) -> str:
        return self.meta().get("name") or self.id

    def status(self) -> str:
        """The stored status, except that a `running` run whose process is dead (store.liveness) reads
        `interrupted`."""
        meta = self.meta()
        status = meta.get("status", "interrupted")
        if status != "running":
            return status
        return "interrupted" if self.dead_reason(meta) else "running"

    def dead_reason(self, meta: dict[str, Any] | None = None) -> str | None:
        """Why this run's training process is taken for dead (the one rule, store.liveness), or None."""
        meta = self.meta() if meta is None else meta
        pid = meta.get("pid")
        return dead_reason(meta.get("host"), int(pid) if pid is not None else -1, meta.get("pid_start"),
                           meta.get("heartbeat", meta.get("updated", 0)))

    def is_elsewhere(self) -> bool:
        """True when the run's process is not this one (another terminal, another host)."""
        meta = self.meta()
        return not (meta.get("pid") == os.getpid() and meta.get("host") == socket.gethostname())

    def parent(self) -> tuple[str, int, str] | None:
        """(parent run id, branch epoch, 'best'|'last') of a forked run; None for a run trained from scratch."""
        record = self.config_record()
        if not record.get("parent"):
            return None
        return record["parent"], int(record.get("parent_epoch") or 0), record.get("parent_checkpoint", "last")

    def resume_problem(self) -> str | None:
        """Why this run cannot be resumed, as a sentence; None when it can."""
        status = self.status()
        if status == "running":
            meta = self.meta()
            return f"it is still training (pid {meta.get('pid')} on {meta.get('host')})."
        if status == "finished":
            return "it finished all its epochs; fork it from its last checkpoint to train further."
        if status == "failed":
            return "it failed (" + (self.meta().get("reason") or "unknown reason").splitlines()[0] + "); fork it " \
                   "with other hyperparameters instead."
        if not self.has_checkpoint("last"):
            return "it ended before its first checkpoint (the end of epoch 1 or a stop): there is nothing to " \
                   "continue from; start it again."
        try:
            self.load_checkpoint("last", mmap=True)
        except Exception as error:  # truncated or foreign: torch raises many kinds
            return f"its last checkpoint cannot be read ({type(error).__name__})."
        return None

    def progress(self) -> float:
        """How much of the planned epochs is done, 0..1 (epochs on disk, or the heartbeat's batch count)."""
        epochs = max(1, self.config().epochs)
        rows, parent = self.metrics(), self.parent()
        done = rows[-1]["epoch"] if rows else (parent[1] if parent else 0)  # a fork's epochs go on from its branch
        beat = self.meta().get("progress") or {}
        if beat.get("batch") and beat.get("batches"):
            done = max(done, beat["epoch"] - 1 + beat["batch"] / beat["batches"])
        return min(1.0, done / epochs)

    # -- metrics
    def append_metrics(self, row: dict[str, Any]) -> None:
        """Add (or replace, by epoch) one epoch's row; the file is rewritten atomically."""
        rows = [r for r in self.metrics() if r["epoch"] != row["epoch"]] + [row]
        rows.sort(key=lambda r: r["epoch"])
        self.write_metrics(rows)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path / "metrics.csv", buffer.getvalue())

    def metrics(self) -> list[dict[str, Any]]:
        try:
            text = (self.path / "metrics.csv").read_text()
        except OSError:
            return []
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]

    # -- checkpoints
    def checkpoint_path(self, which: str = "last") -> Path:
        return self.path / f"{which}.pt"

    def has_checkpoint(self, which: str = "last") -> bool:
        return self.checkpoint_path(which).is_file()

    def save_checkpoint(self, payload: dict[str, Any], which: str = "last") -> None:
        atomic_torch_save(payload, self.checkpoint_path(which))

    def load_checkpoint(self, which: str = "last", map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
        """The saved dict; `mmap=True` maps the file instead of reading it (cheap when only the epoch is wanted)."""
        import torch  # here, not at the top: reading the run store's tables needs no torch

        return torch.load(self.checkpoint_path(which), map_location=map_location, weights_only=True, mmap=mmap)


class RunStore:
    """All runs under one folder (default ./runs or $CIFAR_RUNS_DIR)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_runs_dir()

    def reserve(self, name: str = "") -> Path:
        """A new, empty run folder named after the time and `name` (a run is made in it by `create`)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", name or "run").strip("-")[:40] or "run"
        self.root.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            path = self.root / f"{stamp}-{slug}" if n == 0 else self.root / f"{stamp}-{slug}-{n}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
        raise RuntimeError(f"no free run folder name for {slug} in {self.root}")

    def create(self, config: TrainConfig, record: dict[str, Any], name: str = "", run_id: str = "") -> Run:
        """A new run holding the config (with `record`: seed, device, versions, data source), in a new folder or
        in the one reserved for it (`run_id`, as the app's launcher does)."""
        if run_id:
            path = self.root / run_id
            if (path / "config.json").exists():
                raise FileExistsError(f"run {run_id} exists already in {self.root}")
            path.mkdir(parents=True, exist_ok=True)
        else:
            path = self.reserve(name or config.name)
        run = Run(path)
        atomic_write_json(path / "config.json", {"config": config.to_dict(), **record})
        run.update_meta(name=name or config.name or path.name, started=time.time())
        run.claim(heartbeat=time.time())
        return run

    def runs(self) -> list[Run]:
        """Every readable run, newest first."""
        if not self.root.is_dir():
            return []
        found = [Run(p) for p in self.root.iterdir() if (p / "config.json").is_file()]
        return sorted(found, key=lambda r: r.id, reverse=True)

    def running(self) -> list[Run]:
        """The runs training now, cheaply: only runs whose meta.json was written in the last STALE_AFTER_S are
        read (a training run rewrites it at least every HEARTBEAT_S and at every epoch's end)."""
        if not self.root.is_dir():
            return []
        now, found = time.time(), []
        for path in self.root.iterdir():
            try:
                fresh = now - (path / "meta.json").stat().st_mtime < STALE_AFTER_S
            except OSError:
                continue
            if fresh and (path / "config.json").is_file() and Run(path).status() == "running":
                found.append(Run(path))
        return sorted(found, key=lambda r: r.id, reverse=True)

    def signature(self) -> tuple:
        """Changes whenever a run appears, goes, or writes its meta or metrics: a few stat calls, no reads."""
        if not self.root.is_dir():
            return ()
        marks = []
        for path in sorted(self.root.iterdir()):
            stamps = []
            for name in ("config.json", "meta.json", "metrics.csv"):
                try:
                    stamps.append((path / name).stat().st_mtime_ns)
                except OSError:
                    stamps.append(0)
            if stamps[0]:
                marks.append((path.name, *stamps[1:]))
        return tuple(marks)

    def get(self, run_id: str) -> Run:
        run = Run(self.root / run_id)
        if not (run.path / "config.json").is_file():
            raise KeyError(f"no run {run_id!r} in {self.root}")
        return run

    def rename(self, run: Run, name: str) -> None:
        run.update_meta(name=name.strip() or run.id)

    def delete(self, run: Run) -> None:
        if run.status() == "running":
            raise RuntimeError(f"run {run.name} is still training; stop it before deleting it.")
        shutil.rmtree(run.path)
