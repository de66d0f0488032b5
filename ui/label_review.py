"""The Dynamics page's label errors: find them (a search in a process of its own: K fold runs and cleanlab), review
the flagged images one by one (relabel, the suggested class preselected; exclude; keep) or accept the top N
suggestions after a preview, undo, and train on the edited labels through the app's job. Every decision is a new
version of a label set beside the data (cifar_app/data/labels.py); the dataset's files are never changed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from cifar_app.analysis.label_errors import (
    DETECTORS, RESULTS_DIR, flagged, load_results, load_summary, suggestion_changes,
)
from cifar_app.analysis.label_search import search_state, start_search
from cifar_app.config import ConfigError
from cifar_app.data.labels import EXCLUDED, OWN, LabelSet, LabelSetError, LabelStore, parse_spec
from cifar_app.engine.folds import DEFAULT_FOLDS, labels_spec
from cifar_app.engine.jobs import JobBusy
from cifar_app.store.runs import Run
from ui import common
from ui.image_view import ImageRef, ViewSource, gallery

PAGE = 12  # images reviewed one by one per page
WATCH_S = 2.0  # how often a running search's progress is read
DECISIONS = ("relabel", "exclude", "keep")
DETECTOR_TEXT = {
    "combined": "cleanlab's flags where the training dynamics agree, ranked by both scores",
    "cleanlab": "confident learning on out-of-fold probabilities (cleanlab.filter.find_label_issues)",
    "dynamics": "the mislabel score of this run's training dynamics (the Lists tab's 'likely mislabelled')",
}


def edit_target(run: Run) -> tuple[str, str]:
    """(the sidebar's data folder, the label set this run's edits go to): the set it trained on, else the set of the
    dataset's own labels (made on the first edit)."""
    spec = labels_spec(run)
    return common.data_dir(), parse_spec(spec)[0] if spec else OWN


def watch_search(run: Run) -> None:
    """While the search runs: its latest line; the whole page redraws when it ends."""
    state, line = search_state(run)
    if state != "running":
        st.rerun()
    st.info(f"Searching for label errors: {line}", icon=":material/search:")


@st.cache_data(show_spinner=False, max_entries=8)
def _results(path: str, split: str, stamp: int) -> pd.DataFrame | None:
    return load_results(Path(path), split)


def results(run: Run, split: str = "train") -> pd.DataFrame | None:
    """The saved search of a run on its training or test images, read again only when it changes."""
    try:
        stamp = (run.path / RESULTS_DIR / f"{split}.csv").stat().st_mtime_ns
    except OSError:
        return None
    return _results(str(run.path), split, stamp)


def search_panel(run: Run) -> bool:
    """The search's button and progress; True when results are there to review."""
    state, line = search_state(run)
    summary = load_summary(run.path)
    if state == "running":
        st.fragment(watch_search, run_every=WATCH_S)(run)
        return summary is not None
    if summary is None:
        st.markdown("No search for label errors yet. It trains this run's recipe K times, each time holding a "
                    "fold of the images out, so that every image gets probabilities from a model that never saw it, "
                    "then ranks the labels by cleanlab's confident learning and by this run's training dynamics.")
        if state == "ended":
            st.warning(f"The last search ended without results: {line}", icon=":material/warning:")
    folds = st.number_input("Folds (K training runs of this recipe)", 2, 10, DEFAULT_FOLDS, key="labels_folds")
    again = "Search again" if summary is not None else "Find label errors"
    if st.button(again, key="labels_find", icon=":material/search:", type="secondary" if summary else "primary",
                 help="Starts `python -m cifar_app.labels find RUN` in a process of its own; fold runs trained "
                      "before with the same recipe and labels are used again."):
        start_search(run, common.runs_store().root, common.data_dir(), int(folds))
        st.rerun()
    return summary is not None


def decide(label_set: LabelSet, changes: list[tuple[str, int, int]], why: str, action: str = "") -> None:
    try:
        entry = label_set.edit(changes, why=why, action=action)
    except LabelSetError as error:
        st.error(str(error))
        return
    st.session_state["labels_message"] = f"Saved as {label_set.name}@{entry.version}: {why}."


def page_of(rows: pd.DataFrame, size: int, key: str) -> pd.DataFrame:
    """The rows of the page chosen in a "Page" input (shown only when there are several), kept within the pages
    as the list shrinks."""
    pages = max(1, -(-len(rows) // size))
    if st.session_state.get(key, 1) > pages:
        st.session_state[key] = pages
    number = st.number_input("Page", 1, pages, 1, key=key) if pages > 1 else 1
    return rows.iloc[(number - 1) * size: number * size]


def one_by_one(rows: pd.DataFrame, label_set: LabelSet, source: ViewSource, classes: list[str]) -> None:
    """A page of flagged images, each with a decision and the class to relabel it to (the suggestion preselected)."""
    shown = page_of(rows, PAGE, "labels_page")
    gallery([ImageRef("train", int(i)) for i in shown["index"]],
            [f"#{r['index']} {r['label']} → {r['suggested']}" for _, r in shown.iterrows()], source,
            "labels_review_gallery", columns=6)
    changes = []
    for start in range(0, len(shown), 6):
        cells = st.columns(6)
        for cell, (_, row) in zip(cells, shown.iloc[start:start + 6].iterrows()):
            index = int(row["index"])
            choice = cell.radio(f"#{index}", DECISIONS, index=None, key=f"labels_decision_{index}", horizontal=False)
            new = cell.selectbox("as", classes, index=classes.index(row["suggested"]), key=f"labels_class_{index}",
                                 label_visibility="collapsed", disabled=choice != "relabel")
            if choice is not None:
                label = classes.index(new) if choice == "relabel" else EXCLUDED if choice == "exclude" else \
                    classes.index(row["label"])
                changes.append(("train", index, label))
    if st.button(f"Save {len(changes)} decision(s)", key="labels_save", disabled=not changes,
                 icon=":material/save:"):
        decide(label_set, changes, f"{len(changes)} image(s) reviewed one by one")
        st.rerun()


def in_bulk(rows: pd.DataFrame, label_set: LabelSet, source: ViewSource, classes: list[str]) -> None:
    """Accept the suggestion for the top N, after a preview of them."""
    if st.session_state.get("labels_top", 0) > len(rows):  # fewer left since the last accept
        st.session_state["labels_top"] = len(rows)
    top = int(st.number_input("Accept the suggestion for the top N", 1, max(1, len(rows)), min(100, len(rows)),
                              key="labels_top"))
    chosen = rows.head(top)
    st.caption(f"Preview: the first {min(48, top)} of the {top:,} images, each as label → suggestion (relabel where "
               "the held-out models and the training dynamics name the same class, else exclude).")
    preview = chosen.head(48)
    gallery([ImageRef("train", int(i)) for i in preview["index"]],
            [f"#{r['index']} {r['label']} → {r['suggested'] if r['action'] == 'relabel' else 'exclude'}"
             for _, r in preview.iterrows()], source, "labels_bulk_gallery", columns=8)
    if st.button(f"Accept these {top:,} suggestions", key="labels_accept", type="primary", icon=":material/done_all:"):
        decide(label_set, suggestion_changes(chosen, classes), f"the suggestion for the top {top:,} accepted", action="accept")
        st.rerun()


def versions_panel(run: Run, label_set: LabelSet) -> None:
    """Where the set stands, undo, and a run of this recipe on the set's latest version."""
    st.markdown(f"**Label set** {label_set.describe()}")
    undo_col, train_col = st.columns(2)
    target = label_set.undo_target()
    if undo_col.button("Undo the last edit", key="labels_undo", icon=":material/undo:", disabled=target is None,
                       help=f"puts back what version {target.version} ({target.action}) changed" if target else
                       "nothing to undo"):
        entry = label_set.undo()
        st.session_state["labels_message"] = f"{label_set.name}@{entry.version}: {entry.why}."
        st.rerun()
    spec = f"{label_set.name}@{label_set.latest}"
    if train_col.button("Train on these labels", key="labels_train", icon=":material/play_arrow:", type="primary",
                        help=f"a new run of {run.name}'s recipe on {spec}, started as the Train page starts one"):
        config = run.config().replace(labels=spec, name=f"{run.name}-{spec}", data_dir=common.data_dir(), folds=0,
                                      fold=0)
        try:
            common.job_manager().start(config)
        except (JobBusy, ConfigError, LabelSetError) as error:
            st.error(f"Not started: {error}")
        else:
            st.session_state["labels_message"] = f"Training {config.name}: follow it on the Train page."
            st.rerun()


def label_errors_tab(run: Run, source: ViewSource) -> None:
    message = st.session_state.pop("labels_message", None)
    if message:
        st.success(message, icon=":material/check:")
    if not search_panel(run):
        return
    table = results(run)
    summary = load_summary(run.path) or {}
    if table is None:
        return
    classes = list(source.data.classes)
    data_dir, name = edit_target(run)
    store = LabelStore(data_dir)
    try:
        label_set = store.editable(name, source.data.train_labels.numpy())
    except LabelSetError as error:
        st.error(str(error))
        return
    detector = st.radio("Detector", DETECTORS[::-1], horizontal=True, key="labels_detector",
                        format_func=lambda d: f"{d} ({summary.get('flagged', {}).get(d, 0):,})")
    searched = summary.get("labels") or "the dataset's own labels"
    st.caption(f"{DETECTOR_TEXT[detector]}; {summary.get('folds', '?')} folds, on {searched}. Edits go to the label "
               f"set {label_set.name}.")
    if st.segmented_control("Images", ["training", "test"], default="training", key="labels_split",
                            required=True) == "test":
        test_images(run, detector, label_set, source)
        versions_panel(run, label_set)
        return
    reviewed = label_set.reviewed()
    rows = flagged(table, detector)
    rows = rows[~rows["index"].isin(list(reviewed))]
    st.markdown(f"**{len(rows):,}** flagged images not reviewed yet ({len(reviewed):,} reviewed in "
                f"{label_set.name}).")
    if not rows.empty:
        single, bulk = st.tabs(["One by one", "Accept the top N"])
        with single:
            one_by_one(rows, label_set, source, classes)
        with bulk:
            in_bulk(rows, label_set, source, classes)
    versions_panel(run, label_set)


def test_images(run: Run, detector: str, label_set: LabelSet, source: ViewSource) -> None:
    """The test images the detectors flag (the fold models' mean probabilities, out of sample on every test image,
    and this run's test record): the test set has label errors of its own. A caption opens the image, whose view
    corrects its test label in the set (Evaluate then scores a model on the corrected labels too)."""
    table = results(run, "test")
    if table is None:
        st.caption("This search saved nothing on the test images.")
        return
    corrected = label_set.reviewed("test")
    rows = flagged(table, detector)
    rows = rows[~rows["index"].isin(list(corrected))]
    st.markdown(f"**{len(rows):,}** flagged test images not reviewed yet ({len(corrected):,} reviewed in "
                f"{label_set.name}). Open one to correct its label: the test set's own files are never changed.")
    shown = page_of(rows, 4 * PAGE, "labels_test_page")
    gallery([ImageRef("test", int(i)) for i in shown["index"]],
            [f"#{r['index']} {r['label']} → {r['suggested']}" for _, r in shown.iterrows()], source,
            "labels_test_gallery", columns=8)
