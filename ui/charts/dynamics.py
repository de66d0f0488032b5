"""What the Dynamics page draws, as pure functions (a table in, a chart or PNG bytes out): the data map with
its sampling, the per-class test accuracy over epochs, one image's probability over epochs (the gallery tiles
with their sparklines are ui/png.py's).

The data map of 50,000 images stays responsive because it never draws 50,000 marks: a grey density layer
counts every image in a grid of cells, and on top of it at most MAX_POINTS images are drawn, chosen so that
every image of a sparse cell is drawn and crowded cells are thinned at random (seeded) to the same cap. The
outliers a user hunts for (hard to learn, ambiguous) sit in sparse cells, so all of them stay visible. A box
drawn on the map selects among all the images, not only the drawn ones.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd


MAP_SELECTION = "box"


MAX_POINTS = 4000


MAP_BINS = 40


VARIABILITY_MAX = 0.5  # the standard deviation of a probability cannot exceed it


CORRECTNESS_COLOURS = alt.Scale(domain=[0, 0.5, 1], range=["#d6336c", "#f2c14e", "#2b8a3e"])


def _cells(table: pd.DataFrame, bins: int) -> np.ndarray:
    x = np.clip((table["variability"].to_numpy() / VARIABILITY_MAX * bins).astype(int), 0, bins - 1)
    y = np.clip((table["confidence"].to_numpy() * bins).astype(int), 0, bins - 1)
    return y * bins + x


def map_sample(table: pd.DataFrame, max_points: int = MAX_POINTS, bins: int = MAP_BINS, seed: int = 0) -> pd.DataFrame:
    """At most `max_points` rows of `table` to draw: every row of a grid cell with at most `cap` rows, `cap` rows
    at random from a fuller one, `cap` the largest that keeps the total within `max_points`."""
    if len(table) <= max_points:
        return table
    cells = _cells(table, bins)
    counts = np.bincount(cells, minlength=bins * bins)
    low, high = 0, int(counts.max())
    while low < high:  # the largest cap whose total fits
        cap = (low + high + 1) // 2
        if np.minimum(counts, cap).sum() <= max_points:
            low = cap
        else:
            high = cap - 1
    order = np.lexsort((np.random.default_rng(seed).random(len(cells)), cells))
    ranked = cells[order]
    rank = np.arange(len(ranked)) - np.searchsorted(ranked, ranked, side="left")
    return table.iloc[np.sort(order[rank < low])]


def map_density(table: pd.DataFrame, bins: int = MAP_BINS) -> pd.DataFrame:
    """Images per grid cell (non-empty cells): variability and confidence ranges, count."""
    counts = np.bincount(_cells(table, bins), minlength=bins * bins)
    cells = np.flatnonzero(counts)
    x, y = cells % bins, cells // bins
    return pd.DataFrame({
        "variability": x * VARIABILITY_MAX / bins, "variability_end": (x + 1) * VARIABILITY_MAX / bins,
        "confidence": y / bins, "confidence_end": (y + 1) / bins, "images": counts[cells],
    })


def data_map_chart(points: pd.DataFrame, density: pd.DataFrame) -> alt.LayerChart:
    """Confidence against variability: the density of every image in grey, the drawn images coloured by
    correctness, and a box selection (parameter MAP_SELECTION) over variability and confidence."""
    x_scale = alt.Scale(domain=[0, VARIABILITY_MAX])
    y_scale = alt.Scale(domain=[0, 1])
    box = alt.selection_interval(name=MAP_SELECTION, encodings=["x", "y"], clear="dblclick")
    shade = alt.Chart(density).mark_rect(color="#adb5bd").encode(
        x=alt.X("variability:Q", scale=x_scale, title="variability (spread of the true-class probability)"),
        x2="variability_end:Q",
        y=alt.Y("confidence:Q", scale=y_scale, title="confidence (mean true-class probability)"),
        y2="confidence_end:Q",
        opacity=alt.Opacity("images:Q", scale=alt.Scale(type="log", range=[0.08, 0.6]), legend=None),
        tooltip=[alt.Tooltip("images:Q", format=",", title="images in this cell")],
    )
    dots = alt.Chart(points).mark_circle(size=14).encode(
        x=alt.X("variability:Q", scale=x_scale),
        y=alt.Y("confidence:Q", scale=y_scale),
        color=alt.Color("correctness:Q", scale=CORRECTNESS_COLOURS, title="share of epochs right"),
        opacity=alt.condition(box, alt.value(0.85), alt.value(0.25)),
        tooltip=["index:Q", "label:N", "most_predicted:N", alt.Tooltip("confidence:Q", format=".2f"),
                 alt.Tooltip("variability:Q", format=".2f"), alt.Tooltip("correctness:Q", format=".0%"),
                 "forgotten:Q"],
    ).add_params(box)
    return alt.layer(shade, dots).properties(height=460)


def class_accuracy_chart(frame: pd.DataFrame, classes: list[str]) -> alt.LayerChart:
    """Test accuracy per class at each tested epoch, one coloured line each, and the whole test set ('all') as a
    thick black line. `frame`: epoch, class, accuracy."""
    x = alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d"), title="epoch")
    y = alt.Y("accuracy:Q", title="test accuracy (%)", scale=alt.Scale(zero=False))
    tooltip = ["epoch:Q", "class:N", alt.Tooltip("accuracy:Q", format=".1f")]
    per_class = alt.Chart(frame[frame["class"] != "all"]).mark_line(point=True, strokeWidth=1.5).encode(
        x=x, y=y, color=alt.Color("class:N", sort=classes, title="class"), tooltip=tooltip)
    overall = alt.Chart(frame[frame["class"] == "all"]).mark_line(point=True, color="black", strokeWidth=3.5).encode(
        x=x, y=y, tooltip=tooltip)
    return alt.layer(per_class, overall).properties(height=340)


def trajectory_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """One image's true-class probability at each recorded epoch, each point green when it was right.
    `frame`: epoch, p_true, predicted, correct."""
    base = alt.Chart(frame).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("p_true:Q", scale=alt.Scale(domain=[0, 1]), title="true-class probability"),
    )
    line = base.mark_line(color="#868e96")
    dots = base.mark_circle(size=70).encode(
        color=alt.Color("correct:N", scale=alt.Scale(domain=[True, False], range=["#2b8a3e", "#d6336c"]),
                        title="right"),
        tooltip=["epoch:Q", alt.Tooltip("p_true:Q", format=".2f"), "predicted:N", "correct:N"],
    )
    return alt.layer(line, dots).properties(height=200)
