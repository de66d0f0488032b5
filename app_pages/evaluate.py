"""Evaluate: a trained model on the test set. Accuracy, per-class metrics, a confusion matrix whose cells
open their images, the most confident mistakes, and the predictions as CSV. Every image opens the one image
view (ui.image_view): large, top classes, attention per block, and its probability over the run's epochs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cifar_app.analysis import metrics
from ui.charts.explore import CONFUSION_SELECTION, confusion_chart, per_class_chart
from ui.common import runs_store
from ui.image_view import ImageRef, ViewSource, gallery, records_for
from ui.label_review import edit_target
from ui.model_picker import get_data, pick_model, predictions_csv, test_predictions

ANY = "any"


def show_images(rows: pd.DataFrame, captions: list[str], limit: int, key: str, columns: int = 8) -> None:
    shown = rows.head(limit)
    gallery([ImageRef("test", int(i)) for i in shown["index"]], captions[: len(shown)], source, key, columns=columns)
    if len(rows) > limit:
        st.caption(f"Showing the {limit} most confident of {len(rows):,}.")


def apply_chart_click() -> None:
    """A click on a confusion cell fills the two class pickers below the chart (which the page then reads)."""
    event = st.session_state.get("evaluate_matrix")
    points = (event or {}).get("selection", {}).get(CONFUSION_SELECTION) or []
    if points:
        st.session_state["evaluate_true"] = points[0]["true"]
        st.session_state["evaluate_predicted"] = points[0]["predicted"]


st.title("Evaluate")
data = get_data()
if data is None:
    st.stop()
choice = pick_model("evaluate")
if choice is None:
    st.stop()

preds = test_predictions(choice, data)
classes = list(preds.classes)
run = runs_store().get(choice.run_id) if choice.run_id else None
records, records_problem = records_for(run, data)
source = ViewSource(data, choice.loaded, records, choice.loaded.source, records_problem=records_problem,
                    label_set=edit_target(run) if run is not None else None)
pairs = metrics.most_confused(preds, n=1)
st.caption(f"{choice.loaded.source} on the {len(preds):,} test images ({data.source}).")

acc_col, wrong_col, pair_col = st.columns(3)
acc_col.metric("Test accuracy", f"{preds.accuracy:.2f}%")
wrong_col.metric("Mistakes", f"{int((preds.predicted != preds.labels).sum()):,} of {len(preds):,}")
if not pairs.empty:
    top = pairs.iloc[0]
    pair_col.metric(
        "Most confused", f"{top['true']} → {top['predicted']}",
        f"{top['count']} images ({top['share']:.1%} of {top['true']})", delta_color="off", delta_arrow="off",
    )

st.subheader("Per class")
per_class = metrics.per_class_metrics(preds.labels, preds.predicted, preds.classes)
table_col, chart_col = st.columns([1, 1])
table_col.dataframe(
    per_class, hide_index=True, key="evaluate_metrics",
    column_config={name: st.column_config.NumberColumn(name, format="%.1f%%")
                   for name in ("accuracy", "precision", "recall", "f1")},
)
chart_col.altair_chart(per_class_chart(per_class, classes), width="stretch")

st.subheader("Confusion matrix")
matrix_col, cell_col = st.columns([3, 2], gap="large")
with matrix_col:
    normalized = st.radio("Cells show", ["counts", "share of the true class"], horizontal=True,
                          key="evaluate_normalized") != "counts"
    st.altair_chart(
        confusion_chart(metrics.confusion_frame(preds), classes, normalized), width="stretch",
        on_select=apply_chart_click, selection_mode=CONFUSION_SELECTION, key="evaluate_matrix",
    )
    st.caption("Click a cell to see its images (double-click clears), or pick the pair on the right.")
with cell_col:
    if not pairs.empty:
        st.session_state.setdefault("evaluate_true", pairs.iloc[0]["true"])
        st.session_state.setdefault("evaluate_predicted", pairs.iloc[0]["predicted"])
    true_col, pred_col = st.columns(2)
    true_name = true_col.selectbox("True class", classes, key="evaluate_true")
    pred_name = pred_col.selectbox("Predicted as", classes, key="evaluate_predicted")
    limit = st.selectbox("Show up to", [24, 48, 96, 200], key="evaluate_cell_limit")
    cell = metrics.select(preds, classes.index(true_name), classes.index(pred_name))
    verb = "classified correctly" if true_name == pred_name else f"predicted as **{pred_name}**"
    st.markdown(f"**{len(cell):,}** test images of **{true_name}** {verb}, the model's most confident first.")
    show_images(cell, [f"#{i} · p={p:.2f}" for i, p in zip(cell["index"], cell["confidence"])], limit,
                "evaluate_cell_gallery", columns=4)

st.subheader("Most confident mistakes")
f_true, f_pred, f_limit = st.columns([2, 2, 1])
wrong_true = f_true.selectbox("True class", [ANY, *classes], key="evaluate_mistake_true")
wrong_pred = f_pred.selectbox("Predicted as", [ANY, *classes], key="evaluate_mistake_predicted")
wrong_limit = f_limit.selectbox("Show up to", [24, 48, 96, 200], key="evaluate_mistake_limit")
wrong = metrics.mistakes(
    preds, None if wrong_true == ANY else classes.index(wrong_true),
    None if wrong_pred == ANY else classes.index(wrong_pred),
)
st.markdown(f"**{len(wrong):,}** mistakes; under each: the true class → the prediction, then the top 3 (click "
            "it to open the image).")
show_images(
    wrong,
    [f"{row['true']} → {row['predicted']} | {metrics.describe_top(row, preds.classes)}"
     for _, row in wrong.head(wrong_limit).iterrows()],
    wrong_limit, "evaluate_mistakes_gallery",
)

st.subheader("Export")
st.download_button(
    "Download the predictions (CSV)", predictions_csv(choice.key, data.source, preds),
    file_name=f"predictions-{choice.label}.csv", mime="text/csv", key="evaluate_csv",
    help="One row per test image: index, true class, predicted class, and the probability of every class.",
)
