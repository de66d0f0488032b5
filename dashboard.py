"""CIFAR-10 Studio: `streamlit run dashboard.py`.

The entry point: page navigation over the files in pages/ and the sidebar every page shares. The pages are
thin views over the engine in cifar_app/.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages import common

ROOT = Path(__file__).resolve().parent

# (file, title, icon): a page appears once its file exists, so the app runs while pages are being built.
PAGES = [
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/samples.py", "Samples", ":material/photo_library:"),
    ("pages/evaluate.py", "Evaluate", ":material/grid_on:"),
    ("pages/predict.py", "Predict", ":material/image_search:"),
    ("pages/runs.py", "Runs", ":material/history:"),
]
DEFAULT_PAGE = "pages/train.py"

st.set_page_config(page_title="CIFAR-10 Studio", page_icon=":material/neurology:", layout="wide")
page = st.navigation([
    st.Page(file, title=title, icon=icon, default=file == DEFAULT_PAGE)
    for file, title, icon in PAGES
    if (ROOT / file).is_file()
])
common.sidebar()
page.run()
