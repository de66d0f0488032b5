"""What watching costs a training run: images/s of a `quick` run with 0, 1 and 5 Chromium tabs open on the Train
page, against the same run from the command line with nothing open, measured in one script run.

    python scripts/watch_cost.py --data-dir .data-cache            # the table (about 6 minutes)
    python scripts/watch_cost.py --data-dir .data-cache --sweep    # and a sweep trial with one tab on /sweeps
    python scripts/watch_cost.py --data-dir .data-cache --elsewhere  # and a terminal's run with five tabs open
    python scripts/watch_cost.py --data-dir .data-cache --threads 1  # the app's run on one CPU thread

Each phase trains the `quick` preset (100 epochs, so that it never ends during a measurement; the speed of a batch
does not depend on the schedule) and measures its training pace over a window, from the heartbeats the run
writes into its meta.json (each one records the time and the batch it was written at: pairs inside one epoch's
training give an exact pace, evaluation excluded). Beside the pace it reads the CPU time of the Streamlit server,
of the training process and of Chromium from /proc, and, where the run writes its live event log, how long a
reported batch takes to appear on the page (the live view's lag).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TICK = os.sysconf("SC_CLK_TCK")
BATCH = 128  # the quick preset's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def descendants(pid: int) -> list[int]:
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def chromium_pids() -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"chromium" in cmdline.read_bytes().split(b"\0")[0]:
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def newest_run(runs: Path) -> Path | None:
    found = sorted(p for p in runs.iterdir() if (p / "meta.json").is_file()) if runs.is_dir() else []
    return found[-1] if found else None


def beats(run: Path, seconds: float) -> list[tuple[float, int, int, int]]:
    """(heartbeat time, epoch, batch, batches) samples of the run's meta.json over `seconds`."""
    seen, end = {}, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            meta = json.loads((run / "meta.json").read_text())
            p = meta.get("progress") or {}
            if meta.get("heartbeat") and p.get("batches"):
                seen[meta["heartbeat"]] = (meta["heartbeat"], p["epoch"], p["batch"], p["batches"])
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return sorted(seen.values())


def pace(samples: list[tuple[float, int, int, int]]) -> float:
    """Training images/s from consecutive heartbeats inside one epoch's training."""
    images, seconds = 0, 0.0
    for (t0, e0, b0, n0), (t1, e1, b1, n1) in zip(samples, samples[1:]):
        if e0 == e1 and b1 > b0 and b1 < n1:
            images += (b1 - b0) * BATCH
            seconds += t1 - t0
    return images / seconds if seconds else float("nan")


def training_pid(run: Path) -> int | None:
    try:
        return int(json.loads((run / "meta.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def measure(run: Path, window: float, server: int | None) -> dict:
    trainer = training_pid(run)
    # the app's server and its children, but a training process of its own (which the server may have started)
    groups = {"server": [p for p in descendants(server) if p != trainer or p == server] if server else [],
              "training": [trainer] if trainer and trainer != server else [], "chromium": chromium_pids()}
    before = {k: cpu_seconds(v) for k, v in groups.items()}
    started = time.monotonic()
    samples = beats(run, window)
    spent = time.monotonic() - started
    groups["chromium"] = chromium_pids()
    after = {k: cpu_seconds(v) for k, v in groups.items()}
    return {"images_per_s": pace(samples), **{f"{k}_cpu": (after[k] - before[k]) / spent for k in groups}}


def wait_or_kill(*processes: subprocess.Popen, timeout: float = 60) -> None:
    """Wait for each process to end (it has been asked to), killing one that takes longer than `timeout`."""
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()


def end_process(pid: int, timeout: float = 120) -> None:
    """SIGTERM, then wait for the process to go (it saves a checkpoint first)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.2)


def wait_for_training(runs: Path, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = newest_run(runs)
        if run is not None:
            try:
                progress = json.loads((run / "meta.json").read_text()).get("progress") or {}
            except (OSError, ValueError):
                progress = {}
            if progress.get("batch"):
                return run
        time.sleep(0.5)
    raise SystemExit("no run started training in time")


def cli_phase(args, runs: Path) -> dict:
    command = [sys.executable, "-m", "cifar_app.train", "--preset", "quick", "--epochs", "100", "--data-dir",
               args.data_dir, "--runs-dir", str(runs), "--name", "cli", "--quiet"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = wait_for_training(runs)
        time.sleep(args.warmup)
        return measure(run, args.window, None)
    finally:
        process.send_signal(signal.SIGINT)
        wait_or_kill(process)


def live_lag(page, run: Path, seconds: float) -> float | None:
    """How old, on average, the batch the page shows is: sampled every 0.1 s, the time since the run reported the
    batch the progress text names (from the run's live event log). The user's view of the lag, refresh included."""
    log = run / "live.jsonl"
    if not log.is_file():
        return None
    shown = page.evaluate("""async (seconds) => {
        const seen = [], end = Date.now() + seconds * 1000;
        while (Date.now() < end) {
            const bar = document.querySelector(".cifar-live.main .progress-text, [data-testid='stMain'] [data-testid='stProgress']");
            const m = (bar ? bar.innerText : "").match(/Epoch (\\d+) of \\d+: training, batch (\\d+) of/);
            if (m) seen.push([Date.now() / 1000, parseInt(m[1]), parseInt(m[2])]);
            await new Promise(r => setTimeout(r, 100));
        }
        return seen;
    }""", seconds)
    reported = {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event.get("kind") == "batch":
            reported[(event["epoch"], event["batch"])] = event["t"]  # the latest session's, after a resume
    ages = [t - reported[(e, b)] for t, e, b in shown if (e, b) in reported]
    return statistics.mean(ages) if ages else None


def start_app(runs: Path, data_dir: str, log_name: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`streamlit run dashboard.py` on a free port over `runs` and `data_dir`; (the server, its URL) once healthy."""
    port = free_port()
    env = {**os.environ, **(env or {}), "CIFAR_DATA_DIR": data_dir, "CIFAR_RUNS_DIR": str(runs)}
    with open(runs.parent / log_name, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless",
                                   "true", "--server.port", str(port), "--browser.gatherUsageStats", "false",
                                   "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    return server, url


def app_phase(args, runs: Path, playwright) -> list[tuple[str, dict]]:
    runs.parent.mkdir(parents=True, exist_ok=True)
    server, url = start_app(runs, args.data_dir, "streamlit.log")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    results, run = [], None
    try:
        starter = browser.new_page(viewport={"width": 1500, "height": 1400})
        starter.goto(f"{url}/train")
        starter.get_by_role("button", name="Start training").wait_for(timeout=120_000)
        starter.locator(".st-key-preset").get_by_role("radio", name="quick").click()
        starter.get_by_text("quick: narrow, 3 epochs on a CPU").wait_for()
        starter.get_by_role("tab", name="Optimisation").click()
        epochs = starter.locator(".st-key-cfg_epochs input[type='range']")
        epochs.focus()
        epochs.press("End")
        starter.get_by_text("custom: changed from the presets").wait_for()
        if args.threads:  # the Run tab's "CPU threads of the training process"
            starter.get_by_role("tab", name="Run", exact=True).first.click()
            threads = starter.locator(".st-key-cfg_threads input").first
            threads.fill(str(args.threads))
            threads.press("Enter")
        time.sleep(1)
        starter.get_by_role("button", name="Start training").click()
        run = wait_for_training(runs)
        starter.close()
        time.sleep(args.warmup)
        results.append(("app, 0 tabs", measure(run, args.window, server.pid)))
        pages = []
        for tabs in args.tabs:
            if tabs == 0:
                continue
            while len(pages) < tabs:
                page = browser.new_page(viewport={"width": 1500, "height": 1400})
                page.goto(f"{url}/train")
                pages.append(page)
            pages[0].get_by_text("Training:").wait_for(timeout=60_000)
            time.sleep(args.warmup)
            row = measure(run, args.window, server.pid)
            row["lag_s"] = live_lag(pages[0], run, 8)
            results.append((f"app, {tabs} tab{'s' if tabs > 1 else ''}", row))
        for page in pages:
            page.close()
    finally:
        browser.close()
        pid = training_pid(run) if run else None
        server.send_signal(signal.SIGTERM)
        wait_or_kill(server, timeout=30)
        if pid:  # a training process of its own outlives the server: end it, and wait until it has
            end_process(pid)
    return results


def elsewhere_phase(args, runs: Path, playwright) -> list[tuple[str, dict]]:
    """A run from the command line, watched by five tabs on the Train page ("Also training elsewhere")."""
    command = [sys.executable, "-m", "cifar_app.train", "--preset", "quick", "--epochs", "100", "--data-dir",
               args.data_dir, "--runs-dir", str(runs), "--name", "elsewhere", "--quiet"]
    trainer = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server, url = start_app(runs, args.data_dir, "streamlit-elsewhere.log")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    results = []
    try:
        run = wait_for_training(runs)
        time.sleep(args.warmup)
        results.append(("command line, 0 tabs", measure(run, args.window, server.pid)))
        pages = []
        for _ in range(5):
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.goto(f"{url}/train")
            pages.append(page)
        pages[0].get_by_text("Also training elsewhere").wait_for(timeout=120_000)
        time.sleep(args.warmup)
        results.append(("command line, 5 tabs on /train (elsewhere)", measure(run, args.window, server.pid)))
    finally:
        browser.close()
        server.terminate()
        trainer.send_signal(signal.SIGINT)
        wait_or_kill(server, trainer)
    return results


def sweep_phase(args, runs: Path, playwright) -> list[tuple[str, dict]]:
    env = {**os.environ, "CIFAR_RUNS_DIR": str(runs)}
    subprocess.run([sys.executable, "-m", "cifar_app.sweep", "create", "watch", "--runs-dir", str(runs), "--preset",
                    "quick", "--data-dir", args.data_dir, "--vary", "lr=3e-3,4e-3", "--trials", "1", "--pruner",
                    "none", "--set", "epochs=100"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "cifar_app.sweep", "work", "watch", "--runs-dir", str(runs)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server, url = start_app(runs, args.data_dir, "streamlit-sweep.log", env)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    results = []
    try:
        run = wait_for_training(runs)
        time.sleep(args.warmup)
        results.append(("sweep trial, 0 tabs", measure(run, args.window, server.pid)))
        page = browser.new_page(viewport={"width": 1500, "height": 1400})
        page.goto(f"{url}/sweeps")
        page.get_by_text("watch").first.wait_for(timeout=60_000)
        time.sleep(args.warmup)
        results.append(("sweep trial, 1 tab on /sweeps", measure(run, args.window, server.pid)))
    finally:
        browser.close()
        server.terminate()
        worker.send_signal(signal.SIGTERM)
        wait_or_kill(server, worker)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a CIFAR-10 copy (the quick run trains on it)")
    parser.add_argument("--window", type=float, default=45.0, help="seconds each phase measures")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds to settle before each measurement")
    parser.add_argument("--tabs", type=int, nargs="+", default=[0, 1, 5])
    parser.add_argument("--sweep", action="store_true", help="also a sweep trial with one tab on the Sweeps page")
    parser.add_argument("--elsewhere", action="store_true",
                        help="also a command-line run with five tabs on the Train page (Also training elsewhere)")
    parser.add_argument("--threads", type=int, default=0, help="the app's run with this many CPU threads (0: the "
                                                               "default, one per core); the command line keeps its own")
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="watch-cost-") as tmp:
        rows = [("command line, nothing open", cli_phase(args, Path(tmp) / "cli-runs"))]
        with sync_playwright() as playwright:
            rows += app_phase(args, Path(tmp) / "app-runs", playwright)
        # the baseline again after the app's phases: a disturbance of either shows as a gap between the two, and the
        # ratios are against their mean
        rows.append(("command line, nothing open, again", cli_phase(args, Path(tmp) / "cli-runs-again")))
        with sync_playwright() as playwright:
            if args.elsewhere:
                rows += elsewhere_phase(args, Path(tmp) / "elsewhere-runs", playwright)
            if args.sweep:
                rows += sweep_phase(args, Path(tmp) / "sweep-runs", playwright)
    baseline = statistics.mean(r["images_per_s"] for name, r in rows if name.startswith("command line, nothing"))
    zero = next((r for name, r in rows if name == "app, 0 tabs"), None)
    threads = "one thread per core" if not args.threads else f"{args.threads} thread{'s' * (args.threads > 1)}"
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores; window {args.window:.0f} s after "
          f"{args.warmup:.0f} s; quick preset on {args.data_dir}; the app's run on {threads}; the ratios against the "
          f"mean of the two command-line rows ({baseline:.0f} images/s)")
    print("| what | training images/s | vs command line | server CPU | training CPU | chromium CPU | "
          "per tab: server, chromium (ms/s) | live lag |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        tabs = int(name.split(", ")[1].split()[0]) if name.startswith("app, ") else 0
        per_tab = ""
        if tabs and zero:
            per_tab = (f"{1000 * (r['server_cpu'] - zero['server_cpu']) / tabs:.0f}, "
                       f"{1000 * (r['chromium_cpu'] - zero['chromium_cpu']) / tabs:.0f}")
        lag = f"{r['lag_s']:.2f} s" if r.get("lag_s") is not None else ""
        print(f"| {name} | {r['images_per_s']:.0f} | {100 * r['images_per_s'] / baseline:.0f}% | "
              f"{100 * r['server_cpu']:.0f}% | {100 * r['training_cpu']:.0f}% | {100 * r['chromium_cpu']:.0f}% | "
              f"{per_tab} | {lag} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
