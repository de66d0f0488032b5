"""The Evaluate page in a real browser: a click on a confusion-matrix cell opens that cell's images.

AppTest cannot click a chart, so this drives `streamlit run app_pages/evaluate.py` in Debian's Chromium. The
cell under the pointer is read from the chart's own tooltip, then clicked; the page must then show the
images of exactly that (true, predicted) pair. A screenshot is kept under artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT, write_batches
from explore_helpers import trained_runs_dir

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PORTS = range(8650, 8700)

pytestmark = pytest.mark.browser


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port in 8650-8699")


@contextmanager
def streamlit_server(script: Path, env: dict[str, str], timeout: float = 90):
    """`streamlit run script` on a free local port; yields the URL once /_stcore/health says ok."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
               "--server.port", str(port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    # a log file, not a pipe nobody reads: a chatty server would fill the pipe and hang
    log_path = ROOT / "artifacts" / f"streamlit-{port}.log"
    log_path.parent.mkdir(exist_ok=True)
    log = open(log_path, "w")
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text() if process.poll() is not None else "(still running)"
                raise RuntimeError(f"streamlit did not start: {output[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def wait_idle(page, timeout_ms: int = 90_000) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout_ms)


def test_clicking_a_confusion_cell_shows_its_images(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    write_batches(tmp_path / "data")
    env = {"CIFAR_DATA_DIR": str(tmp_path / "data"), "CIFAR_RUNS_DIR": str(trained_runs_dir())}
    with streamlit_server(ROOT / "app_pages" / "evaluate.py", env) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(url)
            page.get_by_text("Confusion matrix").wait_for(timeout=90_000)
            wait_idle(page)
            assert page.locator("[data-testid='stException']").count() == 0
            matrix = page.locator("[data-testid='stVegaLiteChart']").nth(1)
            matrix.scroll_into_view_if_needed()
            box = matrix.bounding_box()
            # a cell near the matrix's lower right: read which one from the tooltip, then click it
            x, y = box["x"] + box["width"] * 0.62, box["y"] + box["height"] * 0.8
            page.mouse.move(x, y)
            tooltip = page.locator("#vg-tooltip-element")
            tooltip.wait_for(state="visible", timeout=10_000)
            text = tooltip.inner_text()
            true = re.search(r"true\s+(\w+)", text).group(1)
            predicted = re.search(r"predicted\s+(\w+)", text).group(1)
            page.mouse.click(x, y)
            verb = "classified correctly" if true == predicted else f"predicted as {predicted}"
            page.get_by_text(re.compile(rf"test images of {true} {verb}")).wait_for(timeout=60_000)
            wait_idle(page)
            page.screenshot(path=str(artifacts() / "browser-evaluate-click.png"), full_page=True)
            assert page.locator("[data-testid='stException']").count() == 0
        finally:
            browser.close()


def artifacts() -> Path:
    folder = ROOT / "artifacts"
    folder.mkdir(exist_ok=True)
    return folder
