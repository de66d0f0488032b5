"""The run store: one folder per training run, readable at any moment.

    runs/<run id>/
      config.json    the TrainConfig, plus the seed, device, library versions and data source (meta.json)
      meta.json      status (running/finished/stopped/failed), reason, pid, host, heartbeat, timings
      metrics.csv    one row per finished epoch, rewritten atomically as epochs end
      last.pt        model, optimizer, scheduler and loop state at the last saved point (resume)
      best.pt        the same at the best epoch (by validation accuracy when there is a validation split)

Every write goes to a temporary file in the same folder and then `os.replace`s the old one, so a crash at
any moment leaves either the old or the new file, never half of one. A run whose process died while it
was `running` shows as `interrupted` (its pid is gone, or its heartbeat went quiet on another host).
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

import torch

from cifar_app.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from cifar_app.config import TrainConfig

STATUSES = ("running", "finished", "stopped", "failed", "interrupted")
METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "val_acc", "test_acc", "lr", "seconds", "images_per_s")
HEARTBEAT_S = 20.0
# A running run on another host whose heartbeat is this old is taken for dead.
STALE_AFTER_S = 600.0


def default_runs_dir() -> Path:
    return Path(os.environ.get("CIFAR_RUNS_DIR", "runs"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        meta = {**self.meta(), **changes, "updated": time.time()}
        atomic_write_json(self.path / "meta.json", meta)
        return meta

    @property
    def name(self) -> str:
        return self.meta().get("name") or self.id

    def status(self) -> str:
        """The stored status, except that a `running` run whose process is gone reads `interrupted`."""
        meta = self.meta()
        status = meta.get("status", "interrupted")
        if status != "running":
            return status
        if meta.get("host") == socket.gethostname():
            return "running" if _pid_alive(int(meta.get("pid", -1))) else "interrupted"
        return "running" if time.time() - float(meta.get("updated", 0)) < STALE_AFTER_S else "interrupted"

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

    def load_checkpoint(self, which: str = "last", map_location: str | torch.device = "cpu") -> dict[str, Any]:
        return torch.load(self.checkpoint_path(which), map_location=map_location, weights_only=True)


class RunStore:
    """All runs under one folder (default ./runs or $CIFAR_RUNS_DIR)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_runs_dir()

    def create(self, config: TrainConfig, record: dict[str, Any], name: str = "") -> Run:
        """A new run folder holding the config (with `record`: seed, device, versions, data source)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", name or config.name or "run").strip("-")[:40] or "run"
        self.root.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            path = self.root / f"{stamp}-{slug}" if n == 0 else self.root / f"{stamp}-{slug}-{n}"
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        run = Run(path)
        atomic_write_json(path / "config.json", {"config": config.to_dict(), **record})
        run.update_meta(
            name=name or config.name or path.name, status="running", reason="", pid=os.getpid(),
            host=socket.gethostname(), started=time.time(),
        )
        return run

    def runs(self) -> list[Run]:
        """Every readable run, newest first."""
        if not self.root.is_dir():
            return []
        found = [Run(p) for p in self.root.iterdir() if (p / "config.json").is_file()]
        return sorted(found, key=lambda r: r.id, reverse=True)

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
