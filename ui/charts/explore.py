"""The Samples, Evaluate and Predict pages' charts. Class axes keep the dataset's order (not alphabetical) so
the confusion matrix reads like the tables beside it.
"""

from __future__ import annotations

import altair as alt
import pandas as pd


CONFUSION_SELECTION = "cell"


def class_balance_chart(counts: pd.DataFrame, classes: list[str]) -> alt.Chart:
    """Bars of images per class, one bar per split side by side. `counts`: split, class, count."""
    return (
        alt.Chart(counts)
        .mark_bar()
        .encode(
            x=alt.X("class:N", sort=classes, title=None, axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
            xOffset=alt.XOffset("split:N"),
            y=alt.Y("count:Q", title="images"),
            color=alt.Color("split:N", title="split"),
            tooltip=["split:N", "class:N", alt.Tooltip("count:Q", format=",")],
        )
        .properties(height=260)
    )


def per_class_chart(metrics: pd.DataFrame, classes: list[str]) -> alt.Chart:
    """Grouped bars of precision, recall and F1 (percent) per class. `metrics`: the per-class table."""
    long = metrics.melt(id_vars=["class"], value_vars=["precision", "recall", "f1"], var_name="metric",
                        value_name="percent")
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("class:N", sort=classes, title=None, axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
            xOffset=alt.XOffset("metric:N", sort=["precision", "recall", "f1"]),
            y=alt.Y("percent:Q", title="%", scale=alt.Scale(domain=[0, 100])),
            color=alt.Color("metric:N", sort=["precision", "recall", "f1"], title=None),
            tooltip=["class:N", "metric:N", alt.Tooltip("percent:Q", format=".1f")],
        )
        .properties(height=260)
    )


def confusion_chart(cells: pd.DataFrame, classes: list[str], normalized: bool = False) -> alt.LayerChart:
    """The confusion matrix as a heatmap with the number in each cell and a click-to-select point selection.

    `cells`: true, predicted, count, share (long form). Clicking a cell selects its (true, predicted) pair
    under the selection parameter CONFUSION_SELECTION.
    """
    value = "share" if normalized else "count"
    title = "share of the true class" if normalized else "images"
    pick = alt.selection_point(
        name=CONFUSION_SELECTION, fields=["true", "predicted"], on="click", clear="dblclick", empty=False
    )
    base = alt.Chart(cells).encode(
        x=alt.X("predicted:N", sort=classes, title="predicted class",
                axis=alt.Axis(labelAngle=-40, orient="top", labelOverlap=False)),
        y=alt.Y("true:N", sort=classes, title="true class", axis=alt.Axis(labelOverlap=False)),
    )
    heat = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", title=title, scale=alt.Scale(scheme="blues")),
        stroke=alt.condition(pick, alt.value("#e4572e"), alt.value(None)),
        strokeWidth=alt.condition(pick, alt.value(3), alt.value(0)),
        tooltip=["true:N", "predicted:N", alt.Tooltip("count:Q", format=","),
                 alt.Tooltip("share:Q", format=".1%", title="share of true class")],
    ).add_params(pick)
    # dark text on light cells, light on dark ones: the colour scale's top third is dark blue
    threshold = cells[value].max() * 0.55 if len(cells) else 0
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text(f"{value}:Q", format=".2f" if normalized else "d"),
        color=alt.condition(f"datum.{value} > {threshold}", alt.value("white"), alt.value("#222")),
    )
    return alt.layer(heat, text).properties(height=420)


def top_k_chart(top: pd.DataFrame) -> alt.Chart:
    """Horizontal probability bars, most probable on top. `top`: class, probability."""
    return (
        alt.Chart(top)
        .mark_bar()
        .encode(
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            y=alt.Y("class:N", sort="-x", title=None, axis=alt.Axis(labelOverlap=False)),
            tooltip=["class:N", alt.Tooltip("probability:Q", format=".2%")],
        )
        # the height includes the axes (Streamlit fits the whole chart): ~26 px a bar plus the x axis
        .properties(height=50 + 26 * len(top))
    )


def attention_chart(weights: pd.DataFrame) -> alt.LayerChart:
    """Each block's mixing weights a as a blocks x K heatmap. `weights`: block, kernel, weight."""
    base = alt.Chart(weights).encode(
        x=alt.X("kernel:O", title="kernel k", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("block:O", title="block", axis=alt.Axis(labelOverlap=False)),
    )
    heat = base.mark_rect().encode(
        color=alt.Color("weight:Q", title="a_k", scale=alt.Scale(domain=[0, 1], scheme="greens")),
        tooltip=["block:O", "kernel:O", alt.Tooltip("weight:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("weight:Q", format=".2f"),
        color=alt.condition("datum.weight > 0.6", alt.value("white"), alt.value("#222")),
    )
    return alt.layer(heat, text).properties(height=70 + 24 * weights["block"].nunique())
