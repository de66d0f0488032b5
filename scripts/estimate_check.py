"""Is the Train page's time estimate true with the page open? A `quick` run started from the Train page in
Chromium, the page left open on it until it ends: the estimate the page showed before Start against the time
from the click to the run's end.

    python scripts/estimate_check.py --data-dir .data-cache            # about 5 minutes on a 2-core Xeon with AMX
    python scripts/estimate_check.py --data-dir .data-cache --runs 2   # the second run estimated from the first

Prints, for each run, the page's estimate, the speed it came from, the real time (click to end) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import tempfile
import time
from pathlib import Path

from watch_cost import CHROMIUM, CHROMIUM_ARGS, newest_run, start_app


def seconds_of(text: str) -> float:
    """'45 s', '3.4 min', '1.2 h' (the page's short durations) in seconds."""
    number, unit = re.fullmatch(r"([\d.]+) (s|min|h)", text).groups()
    return float(number) * {"s": 1, "min": 60, "h": 3600}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--runs", type=int, default=1, help="runs one after another: the first is estimated by the "
                        "speed probe, the next from the pace of the one before")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="estimate-") as tmp, sync_playwright() as playwright:
        runs = Path(tmp) / "runs"
        server, url = start_app(runs, str(Path(args.data_dir).resolve()), "streamlit.log")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for _ in range(args.runs):
                estimate_one(browser.new_page(viewport={"width": 1500, "height": 1400}), url, runs, args.preset)
        finally:
            browser.close()
            server.send_signal(signal.SIGTERM)
            server.wait(30)


def estimate_one(page, url: str, runs: Path, preset: str) -> None:
    """Open the Train page, read the estimate for `preset`, Start, and time the run to its end with the page open."""
    page.goto(f"{url}/train")
    page.get_by_role("button", name="Start training").wait_for(timeout=120_000)
    page.locator(".st-key-preset").get_by_role("radio", name=preset).click()
    caption = page.get_by_text(re.compile(r"^≈ .* for \d+ epochs? on ")).first
    caption.wait_for(timeout=300_000)  # the speed probe runs first
    text = caption.inner_text()
    shown, speed = re.match(r"≈ (\S+ \S+) for .*\(([\d,]+) training images/s", text).groups()
    estimate = seconds_of(shown)
    before = newest_run(runs)
    clicked = time.time()
    page.get_by_role("button", name="Start training").click()
    meta = {}
    while True:  # the page stays open on the live view all along
        run = newest_run(runs)
        if run is not None and run != before:
            try:
                meta = json.loads((run / "meta.json").read_text())
            except (OSError, ValueError):
                meta = {}
            if meta.get("status") not in (None, "running"):
                break
        time.sleep(1)
    real = time.time() - clicked
    print(f"page said: {text}")
    print(f"estimate {estimate:.0f} s (from {speed} images/s); real, click to end: {real:.0f} s "
          f"(run status {meta.get('status')}); real / estimate = {real / estimate:.2f}", flush=True)
    page.close()


if __name__ == "__main__":
    main()
