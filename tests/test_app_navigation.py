"""The dashboard's navigation in AppTest: the root URL opens the Train page, and every page answers at its own
URL path, which is its file's name (AppTest resolves a page before the first run by that name alone)."""

import tomllib

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


def test_the_server_listens_on_this_machine_only_unless_the_operator_says_otherwise():
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["address"] == "localhost"  # no login: a network must be opened on purpose


def test_the_readme_says_how_to_share_the_app_and_lists_every_page():
    readme = (ROOT / "README.md").read_text()
    sharing = readme.split("## Sharing the app", 1)[1].split("\n## ", 1)[0]
    assert "ssh -L 8501:localhost:8501" in sharing and "--server.address 0.0.0.0" in sharing
    assert "no login" in sharing
    for name in PAGES:
        assert f"`/{name}`" in readme


def test_an_unknown_address_says_the_page_does_not_exist_and_links_to_every_page():
    at = app().switch_page("ui/common.py").run()  # a file that is no page: its address names none
    assert not at.exception and [t.value for t in at.title] == ["Page not found"]
    assert "There is no page at" in at.warning[0].value
    links = [element.proto.page for element in at.get("page_link")]
    assert [link.removesuffix(".py").split("/")[-1] for link in links] == list(PAGES)
