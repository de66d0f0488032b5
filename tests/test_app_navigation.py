"""The dashboard's navigation in AppTest: the root URL opens the Train page, and every page answers at its own
URL path, which is its file's name (AppTest resolves a page before the first run by that name alone)."""

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from conftest import ROOT

PAGES = {"train": "Train", "samples": "Samples", "evaluate": "Evaluate", "dynamics": "Dynamics", "predict": "Predict",
         "runs": "Runs", "sweeps": "Sweeps"}


@pytest.fixture(autouse=True)
def empty_app(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(tmp_path / "runs"))
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)


def test_the_root_url_opens_the_train_page():
    at = app().run()
    assert not at.exception and [t.value for t in at.title] == ["Train"]


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_answers_at_its_own_url_path(name):
    at = app().switch_page(f"app_pages/{name}.py").run()  # before any run: found by the URL path alone
    assert not at.exception and [t.value for t in at.title] == [PAGES[name]]
