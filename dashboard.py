"""CIFAR-10 Studio: `streamlit run dashboard.py`.

The entry point: page navigation over the files in app_pages/ and the sidebar every page shares (ui/). The
pages are thin views over the engine in cifar_app/.

The folder is not called pages/: Streamlit takes a pages/ folder beside the entry script for an old-style
multipage app until st.navigation has run once in the server process, so the first visit after a (re)start
to a page's own URL (a reload of /runs, or a tab reconnecting) ran that file alone: no sidebar, no wide
layout, and every module of the folder listed as a page.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from ui import common

# (file, title, icon); each page's URL is its file's name: /train, /samples, /evaluate, /dynamics, /predict, /runs
PAGES = [
    ("app_pages/train.py", "Train", ":material/model_training:"),
    ("app_pages/samples.py", "Samples", ":material/photo_library:"),
    ("app_pages/evaluate.py", "Evaluate", ":material/grid_on:"),
    ("app_pages/dynamics.py", "Dynamics", ":material/scatter_plot:"),
    ("app_pages/predict.py", "Predict", ":material/image_search:"),
    ("app_pages/runs.py", "Runs", ":material/history:"),
    ("app_pages/sweeps.py", "Sweeps", ":material/tune:"),
]
FIRST_PAGE = "app_pages/train.py"


def url_path(file: str) -> str:
    return file.removeprefix("app_pages/").removesuffix(".py")


st.set_page_config(page_title="CIFAR-10 Studio", page_icon=":material/neurology:", layout="wide")
pages = {file: st.Page(file, title=title, icon=icon, url_path=url_path(file)) for file, title, icon in PAGES}
# Streamlit serves its default page at the root URL only (its own path would answer "Page not found"), so the
# default is a hidden page that opens the first page under that page's own URL: /train can be reloaded and linked.
root = st.Page(lambda: None, title="CIFAR-10 Studio", url_path="start", default=True, visibility="hidden")


def asked_for_another_page() -> str:
    """The address a browser asked for when it names no page here ('' for the root URL): Streamlit then runs
    the default page, which would open /train as if nothing were wrong."""
    ctx = get_script_run_ctx()
    manager = getattr(ctx, "pages_manager", None)
    if manager is None:
        return ""
    known = {page._script_hash for page in (root, *pages.values())}
    asked = manager.intended_page_name or ""
    if asked and asked != root.url_path and asked not in {p.url_path for p in pages.values()}:
        return asked
    wanted = manager.intended_page_script_hash
    return "that address" if wanted and wanted not in known else ""


def page_not_found(asked: str) -> None:
    st.title("Page not found")
    where = f"`/{asked}`" if asked != "that address" else asked
    st.warning(f"There is no page at {where} in CIFAR-10 Studio. The pages are:", icon=":material/link_off:")
    for file, title, icon in PAGES:
        st.page_link(pages[file], label=f"{title} (/{url_path(file)})", icon=icon)


page = st.navigation([root, *pages.values()])
missing = asked_for_another_page() if page is root else ""
if page is root and not missing:
    st.switch_page(pages[FIRST_PAGE])
common.sidebar()
if missing:
    page_not_found(missing)
else:
    page.run()
