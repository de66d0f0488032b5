"""The app in a real browser, past the Train page: every page at its own URL (a deep link and a reload land on
that page), a click on a confusion-matrix cell opens that cell's images, and a box dragged on the Dynamics
page's data map changes its gallery to the images in the box, whose captions open the image view.

AppTest cannot follow a URL, click or drag on a chart, so this drives `streamlit run dashboard.py` in Debian's
Chromium.
Screenshots are kept under artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, IDLE, streamlit_server
from conftest import ROOT, write_batches
from explore_helpers import trained_runs_dir

PORTS = range(8650, 8700)
TITLES = {"train": "Train", "samples": "Samples", "evaluate": "Evaluate", "dynamics": "Dynamics", "predict": "Predict",
          "runs": "Runs", "sweeps": "Sweeps"}
MAP_GALLERY = "[class*='st-key-dynamics_map_gallery_']"  # a caption button's container, keyed by its image

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not CHROMIUM.is_file():
    pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The dashboard over tiny data and one tiny trained run, shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("explore")
    write_batches(tmp / "data")
    env = {"CIFAR_DATA_DIR": str(tmp / "data"), "CIFAR_RUNS_DIR": str(trained_runs_dir())}
    with streamlit_server(ROOT / "dashboard.py", env, PORTS, tmp / "streamlit.log") as url:
        yield url


@pytest.fixture
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1300, "height": 1000})
        finally:
            browser.close()


def wait_idle(page, timeout_ms: int = 90_000) -> None:
    page.wait_for_selector(IDLE, timeout=timeout_ms)


def title(page) -> str:
    heading = page.locator("[data-testid='stMain'] h1").first
    heading.wait_for(timeout=90_000)
    return heading.inner_text().strip()


def test_every_page_has_its_own_url_and_survives_a_reload(app_url, page):
    page.goto(app_url)
    page.wait_for_url(f"{app_url}/train", timeout=90_000)  # the root opens the Train page at its own URL
    assert title(page) == "Train"
    for path, name in TITLES.items():  # each goto is a fresh load of a deep link, as a reload is
        page.goto(f"{app_url}/{path}")
        assert title(page) == name and page.url == f"{app_url}/{path}"
        wait_idle(page)
        assert page.get_by_text("Page not found").count() == 0
        assert page.locator("[data-testid='stException']").count() == 0
    page.reload()  # and a reload keeps the page it is on
    assert title(page) == name and page.url == f"{app_url}/{path}"
    page.screenshot(path=str(artifacts() / "browser-runs-url.png"), full_page=True)
    page.locator("[data-testid='stSidebarNav']").get_by_text("Predict").click()
    page.wait_for_url(f"{app_url}/predict")
    assert title(page) == "Predict"


def test_clicking_a_confusion_cell_shows_its_images(app_url, page):
    page.goto(f"{app_url}/evaluate")
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


def gallery_images(page) -> list[int]:
    """The training images the data map's gallery shows, in order, read from its buttons' keys (the page draws an
    element out of view as a placeholder, so its text may not be there yet; its key is)."""
    names = page.locator(MAP_GALLERY).evaluate_all("elements => elements.map(e => e.className)")
    return [int(re.search(r"st-key-dynamics_map_gallery_train_(\d+)_", name).group(1)) for name in names]


def test_a_box_on_the_data_map_changes_the_gallery_and_a_caption_opens_the_image(app_url, page):
    page.goto(f"{app_url}/dynamics")
    page.get_by_text(re.compile(r"images hard to learn")).wait_for(timeout=90_000)
    wait_idle(page)
    before = gallery_images(page)
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    # from the plot's upper left (confident and steady: easy to learn) to its middle
    page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + box["height"] * 0.08)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    heading = page.get_by_text(re.compile(r"images in the box \(variability"))
    heading.wait_for(timeout=60_000)
    wait_idle(page)
    count = int(re.search(r"([\d,]+) images in the box", heading.inner_text()).group(1).replace(",", ""))
    after = gallery_images(page)
    assert count > 0 and len(after) == min(24, count) and after != before
    page.screenshot(path=str(artifacts() / "browser-dynamics-box.png"), full_page=True)

    first = page.locator(MAP_GALLERY).first
    first.scroll_into_view_if_needed()
    first.locator("[data-testid='stBaseButton-tertiary']").first.click()
    dialog = page.locator("[role='dialog']")
    dialog.get_by_text(f"train image #{after[0]}").wait_for(timeout=60_000)
    dialog.get_by_text("The model says", exact=False).wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts() / "browser-dynamics-view.png"))
    assert page.locator("[data-testid='stException']").count() == 0


def artifacts() -> Path:
    folder = ROOT / "artifacts"
    folder.mkdir(exist_ok=True)
    return folder
