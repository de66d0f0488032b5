"""Starting training processes: every run the app starts, and every sweep worker, is a Python process of its own,
started here the same way.

A training process never shares the web server's process: the server's reruns (one per open tab, a few a second)
would hold the interpreter lock the training loop needs between operations. It is started in a session of its
own, so a server that restarts or is killed (even with SIGKILL) leaves it training, and what it prints goes to a
log file. The app's runs are the trainer's own command line (`python -m cifar_app.train`, every hyperparameter a
flag), so a run started from the app is exactly the run a terminal would start; `python -m cifar_app.sweep work`
is the sweep's. A thread waits for each process this one started, so none is left a zombie.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from cifar_app.atomic import atomic_write_json
from cifar_app.config import TrainConfig
from cifar_app.store.lineage import RESUME_RUNTIME_FIELDS
from cifar_app.store.liveness import process_start
from cifar_app.store.live import LAUNCH_FILE, LIVE_FILE, LOG_FILE

REPOSITORY = Path(__file__).resolve().parents[2]  # where `python -m cifar_app...` finds the package


def start_process(module_args: list[str], log: Path | None, env: dict[str, str] | None = None,
                  detach: bool = True) -> subprocess.Popen:
    """`python -m <module_args>` from the repository, its output appended to `log` (None: this process's own
    output), in a session of its own when `detach` (an app restart leaves it running)."""
    environment = {**os.environ, **(env or {})}
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log if log is not None else os.devnull, "a") as out:
        process = subprocess.Popen([sys.executable, "-m", *module_args], cwd=REPOSITORY, env=environment,
                                   stdin=subprocess.DEVNULL, stdout=out if log is not None else None,
                                   stderr=subprocess.STDOUT if log is not None else None, start_new_session=detach)
    threading.Thread(target=process.wait, daemon=True, name=f"reap-{module_args[0]}-{process.pid}").start()
    return process


def config_args(config: TrainConfig, names: tuple[str, ...] | None = None) -> list[str]:
    """The trainer's flags that make exactly `config` (`python -m cifar_app.train` reads them back), or only the
    fields `names`."""
    args = []
    for name in names or [field.name for field in dataclasses.fields(config)]:
        value, flag = getattr(config, name), "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    return args


def start_training(config: TrainConfig, runs_dir: Path, run_id: str, *, resume: bool = False,
                   fork: tuple[str, str] | None = None) -> tuple[subprocess.Popen, dict]:
    """Train `config` in a process of its own into the run folder `run_id` of `runs_dir` (reserved by the caller;
    with `resume`, the saved run of that id goes on). The folder gets `launch.json` (the process, when it started,
    and where in the run's live log its session begins) and `train.log` (what the process prints); the run itself
    writes its live log there. Returns the process and what launch.json says."""
    folder = runs_dir / run_id
    try:
        live_offset = (folder / LIVE_FILE).stat().st_size  # a resumed run's earlier sessions come before
    except OSError:
        live_offset = 0
    args = ["cifar_app.train", "--runs-dir", str(runs_dir.resolve()), "--quiet"]
    if resume:
        args += ["--resume", run_id, *config_args(config, RESUME_RUNTIME_FIELDS)]  # its own hyperparameters
    else:
        args += ["--run-id", run_id, *config_args(config)]
        if fork is not None:
            args += ["--fork", f"{fork[0]}:{fork[1]}"]
    process = start_process(args, folder / LOG_FILE)
    launch = {"pid": process.pid, "pid_start": process_start(process.pid), "host": socket.gethostname(),
              "launched": time.time(), "by_pid": os.getpid(), "resume": resume, "fork": list(fork) if fork else None,
              "live_offset": live_offset}
    atomic_write_json(folder / LAUNCH_FILE, launch)
    return process, launch


def last_line(path: Path) -> str:
    """The last line a process printed that says something (an error's message, a traceback's last line)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else (lines[-1] if lines else "")

