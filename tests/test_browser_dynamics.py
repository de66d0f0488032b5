"""The Dynamics page in a real browser: a box dragged on the data map changes the gallery to the images in it,
and a caption of the gallery opens the image view.

AppTest cannot drag on a chart, so this drives `streamlit run dashboard.py` at /dynamics in Debian's Chromium,
on the shared tiny trained run (which keeps a per-image record). A screenshot is kept under artifacts/.
"""

from __future__ import annotations

import re

import pytest

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, IDLE, streamlit_server
from conftest import ROOT, write_batches
from explore_helpers import trained_runs_dir
from test_browser_explore import artifacts

PORTS = range(8700, 8750)
GALLERY = "[class*='st-key-dynamics_map_gallery_']"  # a caption button's container, keyed by its image


def gallery_images(page) -> list[int]:
    """The training images the gallery shows, in order, read from its buttons' keys (the page draws an element
    out of view as a placeholder, so its text may not be there yet; its key is)."""
    names = page.locator(GALLERY).evaluate_all("elements => elements.map(e => e.className)")
    return [int(re.search(r"st-key-dynamics_map_gallery_train_(\d+)_", name).group(1)) for name in names]

pytestmark = pytest.mark.browser


def test_a_box_on_the_data_map_changes_the_gallery_and_a_caption_opens_the_image(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    write_batches(tmp_path / "data")
    env = {"CIFAR_DATA_DIR": str(tmp_path / "data"), "CIFAR_RUNS_DIR": str(trained_runs_dir())}
    with streamlit_server(ROOT / "dashboard.py", env, PORTS, tmp_path / "streamlit.log") as url, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{url}/dynamics")
            page.get_by_text(re.compile(r"images hard to learn")).wait_for(timeout=90_000)
            page.wait_for_selector(IDLE, timeout=90_000)
            assert page.locator("[data-testid='stException']").count() == 0
            before = gallery_images(page)

            chart = page.locator("[data-testid='stVegaLiteChart']").first
            chart.scroll_into_view_if_needed()
            box = chart.bounding_box()
            # from the upper left of the plot (confident, steady: easy to learn) to its middle
            page.mouse.move(box["x"] + box["width"] * 0.12, box["y"] + box["height"] * 0.08)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=8)
            page.mouse.up()
            heading = page.get_by_text(re.compile(r"images in the box \(variability"))
            heading.wait_for(timeout=60_000)
            page.wait_for_selector(IDLE, timeout=60_000)
            count = int(re.search(r"([\d,]+) images in the box", heading.inner_text()).group(1).replace(",", ""))
            after = gallery_images(page)
            assert count > 0 and len(after) == min(24, count)
            assert after != before
            page.screenshot(path=str(artifacts() / "browser-dynamics-box.png"), full_page=True)

            first = page.locator(GALLERY).first
            first.scroll_into_view_if_needed()
            first.locator("[data-testid='stBaseButton-tertiary']").first.click()
            dialog = page.locator("[role='dialog']")
            dialog.get_by_text(f"train image #{after[0]}").wait_for(timeout=60_000)
            dialog.get_by_text("The model says", exact=False).wait_for(timeout=30_000)
            page.screenshot(path=str(artifacts() / "browser-dynamics-view.png"))
            assert page.locator("[data-testid='stException']").count() == 0
        finally:
            browser.close()
