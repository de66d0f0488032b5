"""Where sweeps live: by default Optuna's journal file in the runs folder (append-only with a lock file: made for
several processes on one machine, even over NFS); a PostgreSQL URL for workers on many machines. The claim lock
makes counting and creating a trial atomic, so parallel workers never exceed a sweep's budget.
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the journal's own lock still guards every write
    fcntl = None

import optuna

from cifar_app.store.runs import default_runs_dir


class SweepError(Exception):
    """Something a user asked of a sweep that cannot be done; the message says why and what to do."""


def _masked(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class SweepStorage:
    """Where studies live: a PostgreSQL (or SQLite) URL, or by default Optuna's journal file in the runs
    folder. `open()` connects once per instance; `claim_lock` makes counting and creating a trial atomic."""

    def __init__(self, runs_dir: str | os.PathLike | None = None, url: str | None = None):
        self.runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        self.url = url or os.environ.get("CIFAR_SWEEP_STORAGE") or None
        self._storage: optuna.storages.BaseStorage | None = None
        self._rdb: optuna.storages.RDBStorage | None = None

    @property
    def folder(self) -> Path:
        """The sweeps' own folder in the runs folder: the journal file, the claim lock and worker logs."""
        return self.runs_dir / "sweeps"

    def has_studies(self) -> bool:
        """False when the default journal file does not exist yet (looking for a sweep creates no file)."""
        return self.url is not None or (self.folder / "journal.log").is_file()

    def describe(self) -> str:
        return _masked(self.url) if self.url else f"journal file {self.folder / 'journal.log'}"

    def sqlalchemy_url(self) -> str:
        url = self.url or ""
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):  # psycopg 3 is the driver this project installs
                return "postgresql+psycopg://" + url.removeprefix(prefix)
        if url.startswith(("postgresql+psycopg://", "sqlite:///")):
            return url
        raise SweepError(f"unsupported sweep storage {_masked(url)!r}: give a PostgreSQL URL "
                         "(postgresql://user:password@host:5432/database) for workers on many machines, or leave "
                         "--storage out for the journal file in the runs folder.")

    def open(self) -> optuna.storages.BaseStorage:
        if self._storage is not None:
            return self._storage
        if self.url is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(self.folder / "journal.log"))
            self._storage = optuna.storages.JournalStorage(backend)
            return self._storage
        url = self.sqlalchemy_url()
        connect = {"connect_args": {"connect_timeout": 5}} if url.startswith("postgresql") else {}
        try:
            self._rdb = optuna.storages.RDBStorage(url, engine_kwargs=connect)
        except Exception as error:  # sqlalchemy's OperationalError, a missing driver, a bad URL: all the same
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise SweepError(f"cannot reach the sweep storage {_masked(self.url)}: {first}") from None
        self._storage = self._rdb
        return self._storage

    @contextlib.contextmanager
    def claim_lock(self, name: str) -> Iterator[None]:
        """Held while a worker counts the study's trials and creates the next one, so the budget is never
        exceeded: a file lock beside the journal (or SQLite file), a PostgreSQL advisory lock otherwise."""
        self.open()
        if self._rdb is not None and self.sqlalchemy_url().startswith("postgresql"):
            from sqlalchemy import text

            key = zlib.crc32(f"cifar-sweep:{name}".encode())
            with self._rdb.engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            return
        path = self.folder / "claim.lock" if self.url is None else Path(self.url.removeprefix("sqlite:///") + ".claim")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_UN)
