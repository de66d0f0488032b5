"""What the sweep tests (and scripts/sweep_throughput.py) share: tiny sweeps, worker processes, and a PostgreSQL
server of their own with a password, in a temporary folder on a free local port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from cifar_app.config import TrainConfig
from cifar_app.sweeps import spec as sweep_spec
from cifar_app.sweeps import worker as sweep_worker
from cifar_app.sweeps.space import SearchSpace
from cifar_app.sweeps.spec import SweepSpec
from cifar_app.sweeps.storage import SweepStorage

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(blocks=3, width=8, k=2, epochs=3, batch_size=32, device="cpu", val_size=100, records=False)
WORKER_ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TZ": "UTC"}
PASSWORD = "Pa55-w0rd-sweeps-7q"  # a string that appears nowhere else, so a search for it finds only leaks


def tiny_spec(data_dir: Path, name: str = "tiny", space: dict | None = None, **changes) -> SweepSpec:
    space = SearchSpace.from_dict(space or {"lr": {"low": 1e-3, "high": 1e-2, "log": True}})
    base = TrainConfig(**{**TINY, "data_dir": str(data_dir), **changes.pop("base", {})})
    return SweepSpec(name, base, space, **{"trials": 4, "pruner": "none", **changes})


def states(study) -> list[str]:
    return [sweep_spec.STATE_NAMES[t.state] for t in study.get_trials()]


def start_workers(storage: SweepStorage, name: str, count: int, log_dir: Path, env: dict | None = None,
                  runs_dirs: list[Path] | None = None) -> list[subprocess.Popen]:
    """`count` worker processes as a user starts them (`python -m cifar_app.sweep work NAME`), the storage's URL
    in their environment; each in its own runs folder when `runs_dirs` names them."""
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for i in range(count):
        command = sweep_worker.worker_command(name, storage)
        if runs_dirs:
            command[command.index("--runs-dir") + 1] = str(runs_dirs[i])
        processes.append(subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **WORKER_ENV, **storage.worker_env(), **(env or {})},
            stdout=open(log_dir / f"worker-{i}.log", "w"), stderr=subprocess.STDOUT))
    return processes


def wait_all(processes: list[subprocess.Popen], timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
    return codes


def logs(log_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(log_dir.glob("*.log")))


def find_postgres() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


class PgServer:
    """A PostgreSQL server of its own: TCP connections need the password (scram-sha-256). `start()` returns
    why it could not start (or ""); `restart()` is `pg_ctl restart`, as an administrator would."""

    def __init__(self, password: str = PASSWORD):
        self.password, self.bindir = password, find_postgres()
        self.root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
        self.data, self.port, self.as_user = self.root / "data", 0, []

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        return subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                               "-l", str(self.root / "server.log"), "-w", *args], capture_output=True, cwd=self.root)

    def start(self) -> str:
        if self.bindir is None:
            return "PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)"
        if os.geteuid() == 0:  # initdb refuses to run as root: run the server as nobody
            if not shutil.which("runuser"):
                return "running as root without runuser: initdb cannot run as root"
            shutil.chown(self.root, "nobody")
            self.as_user = ["runuser", "-u", "nobody", "--"]
        (self.root / "pw").write_text(self.password)
        if self.as_user:
            shutil.chown(self.root / "pw", "nobody")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        subprocess.run([*self.as_user, str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={self.root / 'pw'}"],
                       check=True, capture_output=True, cwd=self.root)
        (self.root / "pw").unlink()
        if self._pg_ctl("start").returncode != 0:
            return f"PostgreSQL did not start: {(self.root / 'server.log').read_text()[-500:]}"
        return ""

    def restart(self) -> None:
        done = self._pg_ctl("-m", "fast", "restart")
        assert done.returncode == 0, done.stderr.decode()[-500:]

    def stop(self) -> None:
        if self.bindir is None:
            return
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True, cwd=self.root)
        shutil.rmtree(self.root, ignore_errors=True)
