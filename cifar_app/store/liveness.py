"""The one rule for "is this run's process alive", asked by the Runs page (a run's status) and by the sweeps (a
trial's worker) alike.

A training process writes a heartbeat into its run's meta.json every HEARTBEAT_S seconds or so, with its host,
pid and the pid's start time. A process is taken for dead when its heartbeat is older than STALE_AFTER_S
seconds (on the writer's clock, time.time() it wrote: a hung process too), or, on the host that wrote them, when
its pid no longer exists, has exited, or belongs to a later process (which started at another time). The allowance is generous because a heartbeat waits for the step in flight: a long CPU
batch, a torch.compile or a CUDA-graph capture can hold it for a minute or two.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

HEARTBEAT_S = 5.0  # a training run rewrites its meta.json about this often (batches and evaluation alike)
# A heartbeat this old, from another host, is taken for a dead process.
STALE_AFTER_S = 300.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux's /proc/<pid>/stat field 22); None where
    that cannot be read. A pid reused by a later process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process `pid` of this host still runs: it exists, has not exited unreaped (a zombie, whose
    parent has not waited for it yet), and, where `started` is known, is the process that started then, not a
    later one that reuses its pid."""
    if not _pid_alive(pid):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc here: the pid is all there is to go on
    now_started = process_start(pid)
    return state != "Z" and not (started and now_started is not None and now_started != started)


def dead_reason(host: str | None, pid: int | None, pid_start: str | None, heartbeat: float | None,
                now: float | None = None) -> str | None:
    """Why the process `pid` of `host`, last heard at `heartbeat` (time.time() it wrote; None: not yet), is taken
    for dead, or None while it may be alive: silent for STALE_AFTER_S seconds (a hung process too), or, on this
    host, its pid gone or taken by another process."""
    now = time.time() if now is None else now
    if heartbeat is not None and now - float(heartbeat) >= STALE_AFTER_S:
        return f"its process ({host or 'unknown host'}, pid {pid if pid is not None else '?'}) went quiet " \
               f"{now - float(heartbeat):.0f} s ago"
    if host == socket.gethostname() and pid is not None and not process_alive(int(pid), pid_start):
        return f"its process (pid {pid}) died"
    return None
