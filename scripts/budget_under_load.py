"""Does a time budget hold when the machine's pace moves? The same budgeted run twice under the same load: once as
the trainer runs it (planned from the probe, then planned again every few seconds from the measured pace), once
planned once from the probe and never again (the plan a probe alone gives). Issue 23.

    python scripts/budget_under_load.py --data-dir .data-cache --preset quick --budget 2m --load-after 20 --load-for 60

The load is another process multiplying matrices on --load-threads threads from --load-after seconds into each run
for --load-for seconds (a stand-in for a neighbour's test suite on a shared 2-core machine). Prints, per run, the
seconds it took against its budget, its steps and epochs, and its test accuracy. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cifar_app.config import parse_duration, preset  # noqa: E402
from cifar_app.data.dataset import load_cifar10  # noqa: E402
from cifar_app.engine.budget import BudgetSchedule  # noqa: E402
from cifar_app.engine.loop import train  # noqa: E402
from cifar_app.events import StatusEvent  # noqa: E402

BURN = ("import torch, time; torch.set_num_threads({threads}); a = torch.randn(1024, 1024)\n"
        "end = time.time() + {seconds}\nwhile time.time() < end: a @ a")


def load(after: float, seconds: float, threads: int) -> threading.Thread:
    """A neighbour: `threads` threads of matrix products, from `after` seconds on for `seconds`."""

    def burn() -> None:
        time.sleep(after)
        subprocess.run([sys.executable, "-c", BURN.format(threads=threads, seconds=seconds)], check=True)

    thread = threading.Thread(target=burn, daemon=True)
    thread.start()
    return thread


def one_run(config, data, steer: bool, args) -> dict:
    replan = BudgetSchedule.replan
    if not steer:
        BudgetSchedule.replan = lambda self, step, now: None  # the probe's plan, kept
    neighbour = load(args.load_after, args.load_for, args.load_threads)
    started = time.monotonic()
    messages = []
    try:
        result = train(config, data=data, on_event=lambda e: messages.append(e.message)
                       if isinstance(e, StatusEvent) else None)
    finally:
        BudgetSchedule.replan = replan
    seconds = time.monotonic() - started
    neighbour.join()
    final = result.final
    return {"how": "planned again as it goes" if steer else "planned once from the probe", "seconds": seconds,
            "share": seconds / config.time_budget, "epochs": final.epoch if final else 0,
            "test_acc": final.test_acc if final else None, "status": result.status,
            "plan": next((m for m in messages if m.startswith("Time budget") and "fit" in m), ""),
            "outcome": messages[-1] if messages else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--budget", default="2m")
    parser.add_argument("--load-after", type=float, default=20.0)
    parser.add_argument("--load-for", type=float, default=60.0)
    parser.add_argument("--load-threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    data = load_cifar10(args.data_dir)
    config = preset(args.preset, data_dir=args.data_dir, time_budget=parse_duration(args.budget), records=False,
                    precision=args.precision)
    for steer in (True, False):
        row = one_run(config, data, steer, args)
        print(f"{row['how']}: {row['seconds']:.1f} s for a {config.time_budget:.0f} s budget "
              f"({100 * row['share']:.1f}%), {row['epochs']} epochs, test accuracy {row['test_acc']}%, {row['status']}")
        print(f"  {row['plan']}\n  {row['outcome']}", flush=True)


if __name__ == "__main__":
    main()
