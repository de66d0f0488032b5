"""Where sweeps live: by default Optuna's journal file in the runs folder (append-only with a lock file: made for
several processes on one machine); a PostgreSQL URL for workers on many machines. The claim lock makes counting
and creating a trial atomic, so parallel workers never exceed a sweep's budget.

The URL reaches a worker through its environment ($CIFAR_SWEEP_STORAGE), never its command line (every user of
a machine can read every command line); it is shown masked everywhere. A database storage keeps Optuna's trial
heartbeat (`heartbeat_interval`, `grace_period`): liveness is judged on the database's clock, in UTC.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit


import optuna

from cifar_app.atomic import file_lock
from cifar_app.store.runs import default_runs_dir

ENV = "CIFAR_SWEEP_STORAGE"
CONNECT_TIMEOUT_S = 5
T = TypeVar("T")


class SweepError(Exception):
    """Something a user asked of a sweep that cannot be done; the message says why and what to do."""


def password_of(url: str | None) -> str | None:
    """The password a storage URL carries (in its user part or as a `password=` parameter), or None."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        if parts.password:
            return unquote(parts.password)
    except ValueError:
        pass
    found = re.search(r"[?&]password=([^&#]*)", url)
    return unquote(found.group(1)) if found and found.group(1) else None


def masked(text: str, url: str | None = None) -> str:
    """`text` with every password hidden: `scheme://user:***@host`, `password=***`, and the literal password of
    `url` wherever it appears (an error message quoting a connection string)."""
    text = re.sub(r"(://[^:/@\s]+):[^@\s]*@", r"\1:***@", text)
    text = re.sub(r"(password=)[^&\s#'\"]*", r"\1***", text, flags=re.IGNORECASE)
    secret = password_of(url)
    return text.replace(secret, "***") if secret and len(secret) >= 3 else text


def is_storage_error(error: BaseException) -> bool:
    """A storage that cannot be reached just now (a database restarting, a network hiccup): worth a retry.
    Optuna wraps the database's errors in its StorageInternalError."""
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(error, (SQLAlchemyError, optuna.exceptions.StorageInternalError, ConnectionError, TimeoutError))


class SweepStorage:
    """Where studies live: a PostgreSQL (or SQLite) URL, or by default Optuna's journal file in the runs
    folder. `open()` connects once per instance (and once per heartbeat setting); `claim_lock` makes counting
    and creating a trial atomic."""

    def __init__(self, runs_dir: str | os.PathLike | None = None, url: str | None = None):
        self.runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        self.url = url or os.environ.get(ENV) or None
        self._backends: dict[tuple[int, int] | None, optuna.storages.BaseStorage] = {}

    @property
    def folder(self) -> Path:
        """The sweeps' own folder in the runs folder: the journal file, the claim lock and worker logs."""
        return self.runs_dir / "sweeps"

    @property
    def is_database(self) -> bool:
        """A database storage (Optuna's heartbeat judges liveness) rather than the one-machine journal file."""
        return self.url is not None

    def has_studies(self) -> bool:
        """False when the default journal file does not exist yet (looking for a sweep creates no file)."""
        return self.url is not None or (self.folder / "journal.log").is_file()

    def describe(self) -> str:
        return masked(self.url, self.url) if self.url else f"journal file {self.folder / 'journal.log'}"

    def mask(self, text: str) -> str:
        return masked(text, self.url)

    @contextlib.contextmanager
    def reachable(self) -> Iterator[None]:
        """Turn a storage that cannot be reached (a database restarting, a network gone) into a SweepError
        whose sentence says so, masked, instead of a traceback."""
        try:
            yield
        except SweepError:
            raise
        except Exception as error:
            if not is_storage_error(error):
                raise
            raise SweepError(f"the sweep storage {self.describe()} cannot be reached just now: "
                             f"{self.first_line(error)}") from None

    def worker_env(self) -> dict[str, str]:
        """What a worker process needs in its environment to reach this storage (the URL stays off `ps`)."""
        return {ENV: self.url} if self.url else {}

    def sqlalchemy_url(self) -> str:
        url = self.url or ""
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):  # psycopg 3 is the driver this project installs
                return "postgresql+psycopg://" + url.removeprefix(prefix)
        if url.startswith(("postgresql+psycopg://", "sqlite:///")):
            return url
        raise SweepError(f"unsupported sweep storage {masked(url, url)!r}: give a PostgreSQL URL "
                         "(postgresql://user:password@host:5432/database) for workers on many machines, or leave "
                         f"${ENV} unset for the journal file in the runs folder.")

    def open(self, heartbeat: tuple[int, int] | None = None) -> optuna.storages.BaseStorage:
        """The Optuna storage; for a database, with Optuna's trial heartbeat (interval, grace period in seconds)
        when given: a sweep's own setting, which every worker and viewer reads from its spec."""
        if self.url is None:
            heartbeat = None  # the journal has no heartbeat: store.liveness judges its trials
        if heartbeat in self._backends:
            return self._backends[heartbeat]
        if self.url is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(self.folder / "journal.log"))
            self._backends[None] = optuna.storages.JournalStorage(backend)
            return self._backends[None]
        url = self.sqlalchemy_url()
        engine: dict[str, Any] = {"pool_pre_ping": True}  # a restarted server: reconnect instead of failing
        if url.startswith("postgresql"):  # every session on UTC: heartbeats compare alike whatever PGTZ says
            engine["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S, "options": "-c timezone=UTC"}
        interval, grace = heartbeat or (None, None)
        try:
            with _quiet_experimental():
                self._backends[heartbeat] = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=interval, grace_period=grace)
        except Exception as error:  # sqlalchemy's OperationalError, a missing driver, a bad URL: all the same
            raise SweepError(f"cannot reach the sweep storage {self.describe()}: {self.first_line(error)}") from None
        return self._backends[heartbeat]

    def first_line(self, error: BaseException) -> str:
        """An error's first line, masked: enough to act on, no traceback (for Optuna's wrapper, its cause's)."""
        if isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__ is not None:
            error = error.__cause__
        text = str(error).strip()
        return self.mask(text.splitlines()[0] if text else type(error).__name__)

    def retrying(self, action: Callable[[], T], patience_s: float, what: str,
                 echo: Callable[[str], None] | None = None) -> T:
        """`action()`, tried again every second or two while the storage cannot be reached, for up to
        `patience_s` seconds; then a SweepError saying what could not be done."""
        deadline, said = time.monotonic() + patience_s, False
        while True:
            try:
                return action()
            except Exception as error:
                if not is_storage_error(error):
                    raise
                if time.monotonic() >= deadline:
                    raise SweepError(f"could not {what}: the sweep storage {self.describe()} was unreachable for "
                                     f"{patience_s:.0f} s ({self.first_line(error)}).") from None
                if echo and not said:
                    echo(f"the sweep storage is unreachable ({self.first_line(error)}); trying again to {what}")
                    said = True
                time.sleep(1.0)

    @contextlib.contextmanager
    def claim_lock(self, name: str) -> Iterator[None]:
        """Held while a worker counts the study's trials and creates the next one, so the budget is never
        exceeded: a file lock beside the journal (or SQLite file), a PostgreSQL advisory lock otherwise."""
        self.open()
        if self.url is not None and self.sqlalchemy_url().startswith("postgresql"):
            yield from _advisory_lock(self.open(), name)
            return
        path = self.folder / "claim.lock" if self.url is None else Path(self.url.removeprefix("sqlite:///") + ".claim")
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path):
            yield


def _advisory_lock(rdb: optuna.storages.RDBStorage, name: str) -> Iterator[None]:
    """A PostgreSQL session lock on its own connection. A server restart ends the session and with it the lock:
    unlocking a connection that is gone is not an error."""
    from sqlalchemy import text

    key = zlib.crc32(f"cifar-sweep:{name}".encode())
    with rdb.engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    """Optuna warns that its heartbeat arguments are experimental, on every connection: said once, in the docs."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
