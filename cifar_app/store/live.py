"""A run's live event log, `live.jsonl` in its folder: every event the training loop reports (cifar_app.events), one
JSON line each with the time it was written, appended as it happens and kept across resumes. No torch here.

It is how a process that does not train watches one that does: the app's job (engine.jobs) reads the new lines
a few times a second and draws what they say, so the training process never shares the web server's process.
A line is written whole, with one `write` of a file opened for appending; a reader keeps only complete lines, so
it never parses half of one. A batch report is about 300 bytes, four a second: a few MB for a long run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from cifar_app.events import Event, from_dict, to_dict

LIVE_FILE = "live.jsonl"
LAUNCH_FILE = "launch.json"  # written by the launcher in the folder it reserves for a run the app starts
LOG_FILE = "train.log"  # what the training process prints, in a folder the launcher reserved

log = logging.getLogger(__name__)


class LiveLog:
    """Appends events to a run's live log. Until the run's folder is known (`attach`), events are kept in memory
    and written first when it is: the status lines of loading data and building the model come before the run."""

    def __init__(self, folder: Path | None = None):
        self.path: Path | None = None
        self.pending: list[str] = []
        if folder is not None and folder.is_dir():
            self.attach(folder)

    def attach(self, folder: Path) -> None:
        self.path = folder / LIVE_FILE
        pending, self.pending = self.pending, []
        self._write("".join(pending))

    def __call__(self, event: Event) -> None:
        line = json.dumps({**to_dict(event), "t": time.time()}, default=str) + "\n"
        if self.path is None:
            self.pending.append(line)
        else:
            self._write(line)

    def _write(self, text: str) -> None:
        if not text:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)
        except OSError as error:  # a full disk must not end the training: the watcher then sees less
            log.warning("could not write the live log %s (%s)", self.path, error)


def read_events(path: Path, offset: int = 0) -> tuple[list[tuple[int, float, Event]], int]:
    """(the byte offset after its line, the time it was written, the event) for every complete line from byte
    `offset` on, and the offset after the last complete line (where the next read starts)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    events, position = [], offset
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # a line still being written waits for the next read
        position += len(line)
        try:
            values: dict[str, Any] = json.loads(line)
            events.append((position, float(values.pop("t", 0.0)), from_dict(values)))
        except (ValueError, KeyError, TypeError) as error:  # a line from another version, or damaged by hand
            log.warning("skipping a line of %s (%s)", path, error)
    return events, position
