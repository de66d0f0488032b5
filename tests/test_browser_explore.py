"""The Evaluate page in a real browser: a click on a confusion-matrix cell opens that cell's images.

AppTest cannot click a chart, so this drives `streamlit run app_pages/evaluate.py` in Debian's Chromium. The
cell under the pointer is read from the chart's own tooltip, then clicked; the page must then show the
images of exactly that (true, predicted) pair. A screenshot is kept under artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, IDLE, streamlit_server
from conftest import ROOT, write_batches
from explore_helpers import trained_runs_dir

PORTS = range(8650, 8700)

pytestmark = pytest.mark.browser


def wait_idle(page, timeout_ms: int = 90_000) -> None:
    page.wait_for_selector(IDLE, timeout=timeout_ms)


def test_clicking_a_confusion_cell_shows_its_images(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    write_batches(tmp_path / "data")
    env = {"CIFAR_DATA_DIR": str(tmp_path / "data"), "CIFAR_RUNS_DIR": str(trained_runs_dir())}
    with streamlit_server(ROOT / "app_pages" / "evaluate.py", env, PORTS, tmp_path / "streamlit.log") as url, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
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
