"""The real app in a real browser: `streamlit run dashboard.py` on a free local port, driven by Playwright in
Debian's Chromium. One tiny run, watched as the accuracy chart gains points without a reload; one tiny sweep
that searches epochs too, started on the Sweeps page, whose worker process's trials arrive in its table and
charts without a reload.

The screenshots go to artifacts/ (ignored by git): look at them.
"""

from __future__ import annotations

import pytest

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, IDLE, streamlit_server
from conftest import ROOT, write_batches

pytestmark = pytest.mark.browser

PORTS = range(8601, 8650)
ARTIFACTS = ROOT / "artifacts"
ACCURACY_POINTS = ".st-key-accuracy_chart [aria-roledescription='point']"
BEST_POINTS = ".st-key-sweep_best_chart [aria-roledescription='point']"

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not CHROMIUM.is_file():
    pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def app_url(tmp_path):
    """The dashboard on a free port, over a small on-disk CIFAR-10 and an empty run store."""
    write_batches(tmp_path / "data", train_per_class=60, test_per_class=10)
    env = {"CIFAR_DATA_DIR": str(tmp_path / "data"), "CIFAR_RUNS_DIR": str(tmp_path / "runs"),
           "OMP_NUM_THREADS": "1"}  # a small model on shared cores: one thread does not spin against the others
    with streamlit_server(ROOT / "dashboard.py", env, PORTS, tmp_path / "streamlit.log", timeout=60) as url:
        yield url


def test_a_tiny_run_draws_its_accuracy_curve_live(app_url):
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1700})
            page.goto(app_url)
            page.get_by_role("button", name="Start training").wait_for(timeout=90_000)
            page.wait_for_selector(IDLE, timeout=90_000)
            assert page.locator("[data-testid='stException']").count() == 0
            assert "CIFAR-10 ready" in page.locator("[data-testid='stSidebar']").inner_text()

            # the quick preset, 4 epochs instead of 3
            page.locator(".st-key-preset").get_by_role("radio", name="quick").click()
            page.get_by_text("quick: narrow, 3 epochs on a CPU").wait_for()
            page.wait_for_selector(IDLE)
            page.get_by_role("tab", name="Optimisation").click()
            epochs = page.locator(".st-key-cfg_epochs input[type='range']")
            epochs.focus()
            epochs.press("ArrowRight")
            page.get_by_text("custom: changed from the presets").wait_for()
            page.wait_for_selector(IDLE)
            assert epochs.input_value() == "4"

            page.evaluate("window.notReloaded = true")
            page.get_by_role("button", name="Start training").click()
            page.get_by_text("Training:").wait_for(timeout=30_000)
            # the browser draws the progress and the running loss itself, from the state the server publishes
            page.wait_for_function("/batch \\d+ of/.test(document.querySelector('.cifar-live.main .progress-text')"
                                   "?.textContent || '')", timeout=60_000)
            page.wait_for_selector(".cifar-live.main .loss svg path", timeout=60_000)
            assert "Running:" in page.locator(".cifar-live.sidebar .progress-text").inner_text()
            # first epoch: a training and a test point, and the best-epoch diamond
            page.wait_for_function(f"document.querySelectorAll(\"{ACCURACY_POINTS}\").length >= 3", timeout=120_000)
            first = page.locator(ACCURACY_POINTS).count()
            page.screenshot(path=str(ARTIFACTS / "browser-train-running.png"))
            page.wait_for_function(f"document.querySelectorAll(\"{ACCURACY_POINTS}\").length > {first}",
                                   timeout=120_000)
            assert page.evaluate("window.notReloaded === true")  # the points arrived without a page load

            page.get_by_text("The run finished 4 epochs").wait_for(timeout=180_000)
            page.wait_for_selector(IDLE)
            assert page.locator(ACCURACY_POINTS).count() == 2 * 4 + 1
            assert "Finished" in page.locator("[data-testid='stSidebar']").inner_text()
            assert page.locator("[data-testid='stException']").count() == 0
            page.screenshot(path=str(ARTIFACTS / "browser-train-finished.png"))
        finally:
            browser.close()


def fill(page, key: str, value: str) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(value)
    box.press("Tab")
    page.wait_for_selector(IDLE)


def test_a_sweep_started_on_the_page_shows_its_trials_as_they_arrive(app_url, tmp_path):
    from cifar_app.sweeps import spec as sweep_spec
    from cifar_app.sweeps.storage import SweepStorage

    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2000})
            page.goto(f"{app_url}/sweeps")
            page.get_by_text("Hyperparameters to search").wait_for(timeout=90_000)  # no sweep yet: the form
            page.wait_for_selector(IDLE, timeout=90_000)
            fill(page, "sweep_name", "browser")
            fill(page, "sweep_val_size", "100")
            fill(page, "sweep_trials", "3")
            # epochs searched too: a short sweep, and a trials table with epochs both as a field and as progress
            fields = page.locator(".st-key-sweep_fields input")
            fields.click()
            fields.fill("epochs")
            page.get_by_role("option", name="epochs", exact=True).click()
            page.keyboard.press("Escape")
            page.wait_for_selector(IDLE)
            fill(page, "sweep_dim_epochs_values", "1, 2")
            page.locator(".st-key-sweep_pruner").get_by_role("radio", name="none").click()
            page.wait_for_selector(IDLE)
            page.get_by_role("button", name="Start sweep").click()
            page.get_by_text("Started sweep browser").wait_for(timeout=30_000)
            page.evaluate("window.notReloaded = true")
            # the worker process (OMP_NUM_THREADS=1, from the server's environment) claims and trains the trials
            page.wait_for_function(f"document.querySelectorAll(\"{BEST_POINTS}\").length >= 1", timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "browser-sweep-running.png"), full_page=True)
            page.get_by_text("Finished: 3 of 3 trials done").wait_for(timeout=180_000)
            page.wait_for_selector(IDLE)
            assert page.evaluate("window.notReloaded === true")  # the trials arrived without a page load
            assert page.locator(BEST_POINTS).count() == 3
            assert page.locator("[data-testid='stException']").count() == 0
            page.screenshot(path=str(ARTIFACTS / "browser-sweep-finished.png"), full_page=True)
        finally:
            browser.close()
            storage = SweepStorage(tmp_path / "runs")
            for name in sweep_spec.list_sweeps(storage):  # a failed test leaves no worker training
                sweep_spec.request_stop(sweep_spec.load_sweep(name, storage)[0])
