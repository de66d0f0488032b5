"""What a sweep worker costs on this machine: tiny trials through 1, 2 and 4 worker processes, on the journal file
and on a throwaway PostgreSQL server; trials per minute and how long a trial waits to be claimed.

    python scripts/sweep_throughput.py                        # the table in docs/sweeps.md
    python scripts/sweep_throughput.py --trials 12 --workers 1 2 --storage journal

Each row is one sweep of --trials tiny trials (3 blocks, width 8, K=2, batch 32, 2 epochs on 500 training images
and 100 validation images; no pruner), its workers started the way the app starts them (`launch_workers`:
OMP_NUM_THREADS = cores / workers). Measured:
  wall        from starting the workers to the last one's exit (Python, torch and the data load included)
  trials/min  trials / (the last trial's end - the first trial's claim): the pace once the workers run
  trial       the median trial's training time as its worker measured it
  claim wait  per trial, from its worker asking for a trial to holding it (the claim lock, the dead-worker check,
              Optuna's ask, the first heartbeat, the sampling: the `claim_s` each worker records); median and max
  between     per worker, from one trial's end to its next trial's claim (telling Optuna, then claiming)
Run it alone on the machine: the figures are wall-clock times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

_threads = os.environ.get("OMP_NUM_THREADS")
from conftest import write_batches  # noqa: E402  (the tests' own tiny CIFAR-10 on disk)
if _threads is None:  # conftest pins one thread for the tests; the workers here get what the app gives them
    os.environ.pop("OMP_NUM_THREADS", None)
from sweep_helpers import PgServer, tiny_spec  # noqa: E402

from cifar_app.sweeps import spec as sweep_spec  # noqa: E402
from cifar_app.sweeps import worker as sweep_worker  # noqa: E402
from cifar_app.sweeps.storage import SweepStorage  # noqa: E402


def one_sweep(storage: SweepStorage, data: Path, name: str, trials: int, workers: int) -> dict[str, float]:
    sweep_spec.create_sweep(tiny_spec(data, name=name, trials=trials, base={"epochs": 2}), storage)
    started = time.time()
    processes = sweep_worker.launch_workers(name, storage, workers)
    for process in processes:
        process.wait()
    wall = time.time() - started
    study, _ = sweep_spec.load_sweep(name, storage)
    done = [t for t in study.get_trials() if t.state.is_finished()]
    assert len(done) == trials, f"{len(done)} of {trials} trials ended: see {storage.folder / 'logs'}"
    claimed = [t.user_attrs["worker"]["claimed"] for t in done]
    ended = [t.datetime_complete.timestamp() for t in done]
    by_worker: dict[int, list] = {}
    for t, start, end in sorted(zip(done, claimed, ended), key=lambda x: x[1]):
        by_worker.setdefault(t.user_attrs["worker"]["pid"], []).append((start, end))
    between = [b[0] - a[1] for runs in by_worker.values() for a, b in zip(runs, runs[1:])]
    waits = [t.user_attrs["claim_s"] for t in done]
    return {"wall": wall, "per_min": 60 * trials / (max(ended) - min(claimed)),
            "trial": statistics.median(t.user_attrs["seconds"] for t in done),
            "wait_median": statistics.median(waits), "wait_max": max(waits),
            "between": statistics.median(between) if between else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--storage", nargs="+", choices=["journal", "postgresql"], default=["journal", "postgresql"])
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sweep-throughput-"))
    write_batches(root / "data", train_per_class=60, test_per_class=10)
    server = PgServer() if "postgresql" in args.storage else None
    if server is not None and (why := server.start()):
        print(f"skipping PostgreSQL: {why}")
        args.storage.remove("postgresql")
    print(f"{os.cpu_count()} cores; {args.trials} tiny trials per sweep\n")
    print("| storage | workers | wall | trials/min | trial (median) | claim wait (median / max) | between trials |")
    print("|---|---|---|---|---|---|---|")
    try:
        for kind in args.storage:
            for count in args.workers:
                url = server.url if kind == "postgresql" else None
                storage = SweepStorage(root / f"runs-{kind}-{count}", url)
                r = one_sweep(storage, root / "data", f"tp-{count}", args.trials, count)
                print(f"| {kind} | {count} | {r['wall']:.1f} s | {r['per_min']:.1f} | {r['trial']:.2f} s | "
                      f"{1000 * r['wait_median']:.0f} / {1000 * r['wait_max']:.0f} ms | {r['between']:.2f} s |",
                      flush=True)
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["rm", "-rf", str(root)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
