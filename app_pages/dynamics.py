"""Dynamics: how each training image was learned, forgotten or never learned, and how the test set's answers
moved, epoch by epoch, from a run's per-image record (cifar_app.analysis.dynamics). It follows a run while it trains,
in this app or in another process: the record grows at each epoch's end and the page redraws then."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cifar_app.analysis import dynamics
from ui.charts.explore import CONFUSION_SELECTION, confusion_chart
from cifar_app.analysis.dynamics import LISTS, NO_RECORDS, Records
from cifar_app.store.records import has_records, records_signature
from ui.charts.dynamics import MAP_SELECTION, class_accuracy_chart, data_map_chart, map_density, map_sample
from cifar_app.store.runs import Run
from ui.common import POLL_S, job_manager, runs_store
from ui.image_view import ImageRef, ViewSource, gallery, run_model, run_records, tiles_with_sparklines
from ui.label_review import edit_target, label_errors_tab
from ui.model_picker import get_data
from cifar_app.engine.folds import labels_spec

LIMITS = [24, 48, 96]
SHOWN_COLUMNS = ["index", "label", "most_predicted", "looks_like", "confidence", "variability", "correctness",
                 "forgotten", "first_learned", "learned_at", "mislabel_score", "region"]
ORDERS = {  # how a gallery of training images is ordered: column, ascending
    "least confident first": ("confidence", True),
    "most variable first": ("variability", False),
    "most forgotten first": ("forgotten", False),
    "most likely mislabelled first": ("mislabel_score", False),
}


@st.cache_resource(show_spinner=False, max_entries=4)
def _table(path: str, signature: tuple, _records: Records) -> pd.DataFrame:
    return dynamics.image_table(_records)


def pick_run(runs: list[Run]) -> Run:
    """The run to show: the one training in this app, else the newest with a record, else the newest."""
    by_id = {r.id: r for r in runs}
    snap = job_manager().snapshot()
    default = snap.run_id if snap.running and snap.run_id in by_id else next(
        (r.id for r in runs if has_records(r.path)), runs[0].id)
    asked = st.query_params.get("run")
    if asked in by_id:
        default = asked
        del st.query_params["run"]

    def label(run_id: str) -> str:
        run = by_id[run_id]
        record = "" if has_records(run.path) else " · no record"
        return f"{run.name} · {run.status()}{record}"

    ids = list(by_id)
    choice = st.selectbox("Run", ids, index=ids.index(default), key="dynamics_run", format_func=label,
                          help="Runs record how each image is learned unless recording was turned off.")
    return by_id[choice]


def watch(run: Run, signature: tuple) -> None:
    """While the run trains: where it is; the whole page redraws when an epoch's record arrives or it ends."""
    if records_signature(run.path) != signature or run.status() != "running":
        st.rerun()
    progress = run.meta().get("progress") or {}
    where = f"epoch {progress['epoch']}, batch {progress['batch']} of {progress['batches']}" if progress else "starting"
    st.caption(f":material/autorenew: Training ({where}): the record grows at the end of each epoch, and this page "
               "redraws then.")


def summary(table: pd.DataFrame, records: Records) -> None:
    counts = dynamics.region_counts(table)
    cols = st.columns(6)
    cols[0].metric("Training images", f"{len(table):,}")
    cols[1].metric("Epochs recorded", f"{records.epochs[0]}–{records.epochs[-1]}" if len(records.epochs) > 1
                   else f"{records.epochs[0]}")
    for col, region in zip(cols[2:5], dynamics.REGIONS):
        col.metric(region.capitalize(), f"{counts[region]:,}")
    cols[5].metric("Forgotten at least once", f"{int((table['forgotten'] > 0).sum()):,}")


def train_refs(rows: pd.DataFrame) -> list[ImageRef]:
    return [ImageRef("train", int(i)) for i in rows["index"]]


def train_gallery(rows: pd.DataFrame, source: ViewSource, key: str, limit: int) -> None:
    shown = rows.head(limit)
    refs = train_refs(shown)
    captions = [f"#{r['index']} {r['label']} → {r['most_predicted']}{' (a tie)' if r['most_predicted_tied'] else ''}"
                for _, r in shown.iterrows()]
    gallery(refs, captions, source, key, tiles=tiles_with_sparklines(refs, source), columns=6)
    st.caption("Under each image: its label → the class predicted most often (a tie: the one of the later epochs); "
               "the line is its true-class probability at each epoch (dashes at 0.5). Click a caption to open the "
               "image.")


def box_of(event) -> dict | None:
    box = (event or {}).get("selection", {}).get(MAP_SELECTION) or {}
    return box if "variability" in box and "confidence" in box else None


def data_map_tab(table: pd.DataFrame, source: ViewSource) -> None:
    points, density = map_sample(table), map_density(table)
    drawn = "every image" if len(points) == len(table) else (
        f"{len(points):,} of {len(table):,} images: every image where few lie, a random share where many crowd (the "
        f"grey cells count all of them)")
    st.caption(f"Each point is a training image: its mean true-class probability over the epochs (confidence) "
               f"against its spread (variability), coloured by the share of epochs it was right. Drawn: {drawn}. "
               "Drag a box to see the images in it, all of them, not only the drawn ones (double-click clears).")
    map_col, pick_col = st.columns([3, 2], gap="large")
    with map_col:
        event = st.altair_chart(data_map_chart(points, density), on_select="rerun", selection_mode=MAP_SELECTION,
                                key="dynamics_map", width="stretch")
    box = box_of(event)
    with pick_col:
        if box is None:
            region = st.radio("Until a box is drawn, show", dynamics.REGIONS, index=2, key="dynamics_region",
                              horizontal=True)
            chosen = table[table["region"] == region]
            st.markdown(f"**{len(chosen):,}** images **{region}**.")
        else:
            (v0, v1), (c0, c1) = sorted(box["variability"]), sorted(box["confidence"])
            chosen = table[table["variability"].between(v0, v1) & table["confidence"].between(c0, c1)]
            st.markdown(f"**{len(chosen):,}** images in the box (variability {v0:.2f}–{v1:.2f}, confidence "
                        f"{c0:.2f}–{c1:.2f}).")
        order_col, limit_col = st.columns(2)
        order = order_col.selectbox("Order", list(ORDERS), key="dynamics_map_order")
        limit = limit_col.selectbox("Show up to", LIMITS, key="dynamics_map_limit")
    column, ascending = ORDERS[order]
    chosen = chosen.sort_values(column, ascending=ascending, kind="stable")
    train_gallery(chosen, source, "dynamics_map_gallery", limit)


def lists_tab(table: pd.DataFrame, source: ViewSource, run: Run) -> None:
    name_col, limit_col = st.columns([4, 1])
    name = name_col.radio("List", list(LISTS), horizontal=True, key="dynamics_list")
    limit = limit_col.selectbox("Show up to", LIMITS, key="dynamics_list_limit")
    make, meaning = LISTS[name]
    rows = make(table)
    st.markdown(f"**{len(rows):,}** training images **{name}**: {meaning}.")
    if rows.empty:
        return
    train_gallery(rows, source, f"dynamics_list_{name.replace(' ', '_')}", limit)
    st.dataframe(rows[SHOWN_COLUMNS].head(500), hide_index=True, key="dynamics_list_table",
                 column_config={c: st.column_config.NumberColumn(c, format="%.2f") for c in
                                ("confidence", "variability", "correctness", "mislabel_score")})
    st.download_button(
        f"Download the {len(rows):,} rows (CSV)", rows.to_csv(index=False, float_format="%.4f").encode(),
        file_name=f"{run.id}-{name.replace(' ', '-')}.csv", mime="text/csv", key="dynamics_list_csv",
        help="The per-image table of this list: index in CIFAR-10's training set, label, and every measure.",
    )


def apply_cell_click() -> None:
    points = (st.session_state.get("dynamics_matrix") or {}).get("selection", {}).get(CONFUSION_SELECTION) or []
    if points:
        st.session_state["dynamics_true"] = points[0]["true"]
        st.session_state["dynamics_predicted"] = points[0]["predicted"]


def test_tab(records: Records, source: ViewSource) -> None:
    epochs = [int(e) for e in records.test_epochs]
    if not epochs:
        st.info("No test pass recorded yet: the test set is evaluated at the end of each epoch the run tests.")
        return
    classes = list(records.classes)
    st.markdown("**Test accuracy per class at each tested epoch** (the thick black line: the whole test set)")
    st.altair_chart(class_accuracy_chart(dynamics.class_accuracy_over_epochs(records), classes), width="stretch")

    st.markdown("**The confusion matrix at one epoch**")
    epoch = st.select_slider("Epoch", epochs, value=epochs[-1], key="dynamics_test_epoch") if len(epochs) > 1 \
        else epochs[0]
    cells = dynamics.confusion_at(records, epoch)
    confused = cells[cells["true"] != cells["predicted"]].sort_values("count", ascending=False, kind="stable")
    st.session_state.setdefault("dynamics_true", confused.iloc[0]["true"])  # the most confused pair, at first
    st.session_state.setdefault("dynamics_predicted", confused.iloc[0]["predicted"])
    matrix_col, cell_col = st.columns([3, 2], gap="large")
    with matrix_col:
        st.altair_chart(confusion_chart(cells, classes), width="stretch",
                        on_select=apply_cell_click, selection_mode=CONFUSION_SELECTION, key="dynamics_matrix")
        st.caption("Click a cell to see its images (double-click clears), or pick the pair on the right.")
    with cell_col:
        true_col, pred_col = st.columns(2)
        true = true_col.selectbox("True class", classes, key="dynamics_true")
        predicted = pred_col.selectbox("Predicted as", classes, key="dynamics_predicted")
        cell = dynamics.cell_images(records, epoch, classes.index(true), classes.index(predicted))
        verb = "classified correctly" if true == predicted else f"predicted as **{predicted}**"
        st.markdown(f"**{len(cell):,}** test images of **{true}** {verb} at epoch {epoch}, the least sure first.")
        shown = cell.head(24)
        gallery([ImageRef("test", int(i)) for i in shown["index"]],
                [f"#{i} · p={p:.2f}" for i, p in zip(shown["index"], shown["p_true"])], source,
                "dynamics_cell_gallery", columns=4)

    st.markdown("**Images whose prediction changed between two epochs**")
    if len(epochs) < 2:
        st.caption("One tested epoch so far: nothing to compare yet.")
        return
    before, after = st.select_slider("Between epochs", epochs, value=(epochs[0], epochs[-1]), key="dynamics_change")
    if before == after:
        st.caption("Pick two different epochs.")
        return
    changes = dynamics.changed_predictions(records, before, after)
    counts = changes["change"].value_counts()
    kind = st.radio("Show", ["all", *dynamics.CHANGES], horizontal=True, key="dynamics_change_kind",
                    format_func=lambda k: k if k == "all" else f"{k} ({dynamics.CHANGES[k]}): {counts.get(k, 0):,}")
    shown = changes if kind == "all" else changes[changes["change"] == kind]
    st.markdown(f"**{len(shown):,}** test images changed their prediction between epoch {before} and epoch {after}; "
                "under each: its label, then its prediction at the first epoch → at the second.")
    shown = shown.head(48)
    gallery([ImageRef("test", int(i)) for i in shown["index"]],
            [f"#{r['index']} {r['label']}: {r['before']} → {r['after']}" for _, r in shown.iterrows()], source,
            "dynamics_change_gallery")


st.title("Dynamics")
st.caption("How each image was learned, forgotten or never learned, from the probability the model gave its "
           "label at every epoch of training (Dataset Cartography; forgetting events).")
data = get_data()
if data is None:
    st.stop()
runs = runs_store().runs()
if not runs:
    st.info("No runs yet. Train one on the **Train** page (the `quick` preset takes a few minutes on a CPU), or "
            "`python -m cifar_app.train --preset quick`: every run records how each image is learned.")
    st.stop()
run = pick_run(runs)
signature = records_signature(run.path)
if run.status() == "running":
    st.fragment(watch, run_every=POLL_S * 2)(run, signature)
records = run_records(run)
if records is None:
    st.info(NO_RECORDS.format(run_id=run.id))
    st.stop()
if not len(records.epochs):
    st.info("No epoch of this run has ended yet: the record of epoch "
            f"{records.first_epoch} appears when it ends, and this page shows it then.")
    st.stop()
labels = labels_spec(run)
problem = records.data_mismatch(data.train_labels.numpy(), data.test_labels.numpy(), label_set=bool(labels))
if problem and "cannot" in problem:
    st.error(problem)
    st.stop()
if problem:
    st.warning(problem)
if records.origin:
    parent = " (its earlier epochs are in the parent's record, if the parent kept one)" \
        if records.origin.startswith("fork") else ""
    st.info(f"This record starts at epoch {records.first_epoch}: {records.origin}{parent}.")
table = _table(str(run.path), signature, records)
source = ViewSource(data, run_model(run), records, f"{run.name}: its best checkpoint", label_set=edit_target(run))
st.caption(f"{run.name}: {records.describe()}" + (f", trained on the label set {labels}." if labels else "."))
summary(table, records)
chosen = st.multiselect("Classes", list(records.classes), key="dynamics_classes", placeholder="all classes",
                        help="Show only training images with these labels (the data map, the gallery and the lists).")
shown = table[table["label"].isin(chosen)] if chosen else table
map_tab, lists, errors, test = st.tabs(["Data map", "Lists", "Label errors", "Test set over epochs"])
with map_tab:
    data_map_tab(shown, source)
with lists:
    lists_tab(shown, source, run)
with errors:
    label_errors_tab(run, source)
with test:
    test_tab(records, source)
