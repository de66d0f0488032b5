"""The live part of a training job that the browser draws itself (live_part.js): the Train page's progress and
running charts ("main"), and the sidebar's line ("sidebar"). Both read the state ui/live_publish.py publishes, and
ask for a rerun of their fragment when an epoch or the run ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

CSS = """
.cifar-live { font-family: inherit; color: inherit; }
.cifar-live .progress-text { font-size: 0.875rem; margin-bottom: 0.3rem; }
.cifar-live .bar { height: 0.5rem; border-radius: 0.25rem; background: #f0f2f6; overflow: hidden; }
.cifar-live.sidebar .bar { background: #dee2e6; }
.cifar-live .bar-fill { height: 100%; width: 0; background: #1c7ed6; }
.cifar-live .pace { margin: 0.8rem 0 0.4rem; }
.cifar-live .charts { display: flex; gap: 1.5rem; }
.cifar-live .charts > div { flex: 1; min-width: 0; }
.cifar-live svg { display: block; font-size: 11px; }
.cifar-live svg .title { font-size: 13px; font-weight: 600; fill: #262730; }
.cifar-live svg .tick, .cifar-live svg .label { fill: #6c7581; }
.cifar-live svg .grid { stroke: #e6e9ef; stroke-width: 1; }
"""
# in the page's own DOM (its classes are its own), where the page's fonts apply and a test can read it
component = st.components.v2.component("cifar_live_part", js=Path(__file__).with_suffix(".js").read_text(), css=CSS,
                                       isolate_styles=False)


def live_part(mode: str, key: str, url: str, state: dict[str, Any], **data: Any) -> None:
    """Mount the live part (`mode` main or sidebar) on the published state at `url`, drawn first from `state`."""
    component(key=key, on_changed_change=lambda: None,
              data={"mode": mode, "url": url, "job": state["job"], "epochs": state["epochs"], "state": state, **data})
