"""Altair charts of a sweep: pure functions, a DataFrame in and a chart out (no Streamlit, no Optuna).

The trials frame has one row per trial (trial, state, val_acc and each varied hyperparameter in its
`param_column`, as `cifar_app.sweeps.views.trial_rows` makes it); the curves frame one row per trial and epoch (trial, epoch, val_acc, state).
"""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import pandas as pd

from cifar_app.sweeps.space import Dimension, param_column

STATES = ["complete", "pruned", "stopped", "failed", "running", "waiting"]
STATE_COLORS = ["#4c78a8", "#f58518", "#9d755d", "#e45756", "#54a24b", "#bab0ac"]
OBJECTIVE_AXIS = "val acc (%)"


def _state_color(title: str | None = "state") -> alt.Color:
    return alt.Color("state:N", scale=alt.Scale(domain=STATES, range=STATE_COLORS), title=title)


def best_so_far_chart(trials: pd.DataFrame) -> alt.LayerChart:
    """Each finished trial's validation accuracy at its last epoch by trial number (a pruned one's at the epoch
    it stopped), and the best complete trial so far as a step line."""
    done = trials[trials["state"].isin(["complete", "pruned"]) & trials["val_acc"].notna()].sort_values("trial")
    best = done[done["state"] == "complete"].assign(best=lambda d: d["val_acc"].cummax())
    x = alt.X("trial:Q", title="trial", axis=alt.Axis(tickMinStep=1, format="d"))
    points = alt.Chart(done).mark_point(filled=True, size=70).encode(
        x=x, y=alt.Y("val_acc:Q", title="validation accuracy (%)", scale=alt.Scale(zero=False)),
        color=_state_color(), tooltip=["trial:Q", "state:N", alt.Tooltip("val_acc:Q", format=".2f")],
    )
    line = alt.Chart(best).mark_line(interpolate="step-after", color="#222", strokeWidth=2).encode(
        x=x, y="best:Q", tooltip=["trial:Q", alt.Tooltip("best:Q", format=".2f", title="best so far")],
    )
    return alt.layer(line, points).properties(height=280, title="Best so far")


def _position(dim: Dimension, value: Any) -> float | None:
    """Where `value` sits on its dimension's axis, 0 (low end or first choice) to 1."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not dim.is_range:
        choices = list(dim.choices)
        if value not in choices:
            return None
        return choices.index(value) / (len(choices) - 1) if len(choices) > 1 else 0.5
    low, high, value = float(dim.low), float(dim.high), float(value)
    if dim.log:
        low, high, value = math.log(low), math.log(high), math.log(value)
    return (value - low) / (high - low) if high > low else 0.5


def _label(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def parallel_frames(trials: pd.DataFrame, dims: list[Dimension]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(lines, ticks) for the parallel-coordinates chart: each complete or pruned trial's position (0..1) on
    each hyperparameter's axis and on validation accuracy's; the labels at each axis's ends (or choices)."""
    shown = trials[trials["state"].isin(["complete", "pruned"]) & trials["val_acc"].notna()]
    lines, ticks = [], []
    low, high = (shown["val_acc"].min(), shown["val_acc"].max()) if len(shown) else (0.0, 100.0)
    for _, row in shown.iterrows():
        for dim in dims:
            value = row.get(param_column(dim.name))
            position = _position(dim, value)
            if position is not None:
                lines.append({"trial": row["trial"], "axis": dim.name, "position": position, "state": row["state"],
                              "value": _label(value), "val_acc": row["val_acc"]})
        position = (row["val_acc"] - low) / (high - low) if high > low else 0.5
        lines.append({"trial": row["trial"], "axis": OBJECTIVE_AXIS, "position": position, "state": row["state"],
                      "value": f"{row['val_acc']:.2f}", "val_acc": row["val_acc"]})
    for dim in dims:
        ends = list(dim.choices) if not dim.is_range else [dim.low, dim.high]
        ticks += [{"axis": dim.name, "position": _position(dim, v), "label": _label(v)} for v in ends]
    ticks += [{"axis": OBJECTIVE_AXIS, "position": p, "label": f"{v:.1f}"} for p, v in ((0, low), (1, high))]
    return pd.DataFrame(lines, columns=["trial", "axis", "position", "state", "value", "val_acc"]), pd.DataFrame(ticks)


def parallel_chart(lines: pd.DataFrame, ticks: pd.DataFrame, axes: list[str]) -> alt.LayerChart:
    """One line per trial across the hyperparameters' axes to its validation accuracy, coloured by it; pruned
    trials in grey dashes (their accuracy is from the epoch they stopped)."""
    order = [*axes, OBJECTIVE_AXIS]
    x = alt.X("axis:N", sort=order, title=None,
              axis=alt.Axis(labelAngle=-25, labelAlign="right", labelOverlap=False, labelLimit=140))
    y = alt.Y("position:Q", axis=None, scale=alt.Scale(domain=[-0.05, 1.05]))
    tooltip = ["trial:Q", "axis:N", "value:N", alt.Tooltip("val_acc:Q", format=".2f", title="val acc")]
    complete = alt.Chart(lines[lines["state"] == "complete"]).mark_line(strokeWidth=2, opacity=0.8).encode(
        x=x, y=y, detail="trial:N", tooltip=tooltip,
        color=alt.Color("val_acc:Q", scale=alt.Scale(scheme="viridis"), title="val acc (%)"),
    )
    pruned = alt.Chart(lines[lines["state"] == "pruned"]).mark_line(color="#aaa", strokeDash=[4, 3], opacity=0.7).encode(
        x=x, y=y, detail="trial:N", tooltip=tooltip)
    rules = alt.Chart(pd.DataFrame({"axis": order})).mark_rule(color="#888").encode(x=x)
    labels = alt.Chart(ticks).mark_text(align="left", dx=4, fontSize=10, color="#444").encode(x=x, y=y, text="label:N")
    return alt.layer(rules, pruned, complete, labels).properties(height=300, title="Hyperparameters and accuracy")


def importance_height(bars: int) -> int:
    """The chart's whole height (Streamlit fits title and axis inside it): about 36 pixels a bar."""
    return 110 + 36 * bars


def importance_chart(importances: dict[str, float]) -> alt.Chart:
    frame = pd.DataFrame({"hyperparameter": list(importances), "importance": list(importances.values())})
    return alt.Chart(frame).mark_bar(color="#4c78a8").encode(
        x=alt.X("importance:Q", title="importance (PED-ANOVA)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("hyperparameter:N", sort="-x", title=None),
        tooltip=["hyperparameter:N", alt.Tooltip("importance:Q", format=".3f")],
    ).properties(height=importance_height(len(frame)), title="Hyperparameter importances")


def curves_chart(curves: pd.DataFrame, best: int | None = None, selected: int | None = None) -> alt.LayerChart:
    """Every trial's validation accuracy per epoch, coloured by its state; the best trial thick and black, the
    selected one thick and red."""
    x = alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d"))
    y = alt.Y("val_acc:Q", title="validation accuracy (%)", scale=alt.Scale(zero=False))
    tooltip = ["trial:Q", "epoch:Q", "state:N", alt.Tooltip("val_acc:Q", format=".2f")]
    base = alt.Chart(curves).mark_line(point=True, opacity=0.55, strokeWidth=1.5).encode(
        x=x, y=y, detail="trial:N", color=_state_color(), tooltip=tooltip)
    layers = [base]
    for number, color in ((best, "#222"), (selected, "#d62728")):
        if number is not None:
            one = curves[curves["trial"] == number]
            layers.append(alt.Chart(one).mark_line(point=True, color=color, strokeWidth=3.5).encode(
                x=x, y=y, tooltip=tooltip))
    return alt.layer(*layers).properties(height=300, title="Learning curves (validation accuracy per epoch)")
