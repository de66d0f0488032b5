"""The training curves: per-epoch loss and accuracy, the running loss and the learning rate of a live run, and
runs compared on shared axes.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from cifar_app.events import METRIC_FIELDS


ACCURACY_SERIES = {"train_acc": "training", "val_acc": "validation", "test_acc": "test"}


ACCURACY_COLOURS = {"training": "#8c96a8", "validation": "#f08c00", "test": "#1c7ed6"}


LOSS_COLOUR = "#c2255c"


LR_COLOUR = "#2f9e44"


CHART_HEIGHT = 260


# The running loss is smoothed by an exponential moving average: each smoothed point keeps this share of the
# previous smoothed value and takes the rest from the new report (TensorBoard's "smoothing" slider, whose range
# a slider for it can take: 0 draws the reports themselves, 0.99 averages over about a hundred).
DEFAULT_SMOOTHING = 0.8


MAX_SMOOTHING = 0.99


# Axis labels: Vega prints a lone value (a chart with one point) in full, e.g. 2.899619; these keep them short.
LOSS_FORMAT = ".3~f"


ACCURACY_FORMAT = ".2~f"


POSITION_FORMAT = ".3~f"


LR_FORMAT = "~e"  # 1e-3, 4e-3: as learning rates are written (a log axis labels its powers of ten only)


LR_LABEL = f"datum.value == 0 ? '0' : format(datum.value, '{LR_FORMAT}')"  # a linear axis starts at 0, not 0e+0


# A learning rate that changes by at least this factor over the run is drawn on a log axis, where warm-up,
# decay and annealing to a small fraction stay readable (on a linear axis the last decades are flat at zero).
LOG_LR_RATIO = 10


ZOOM = "zoom"


# A chart a few hundred pixels wide shows no more than this many batch-loss points; more only cost time.
MAX_LOSS_POINTS_DRAWN = 600


def zoom() -> alt.Parameter:
    """Zoom (wheel) and pan (drag) along the epoch axis; a double-click returns to the whole run.

    Named, so that the same data makes the same spec (Streamlit keeps a chart, and its zoom, while its spec is
    unchanged), and only on x: the y axis keeps fitting the values, which is what a zoom into epochs is for.
    """
    return alt.selection_interval(name=ZOOM, bind="scales", encodings=["x"], clear="dblclick")


# The zoomable charts clip their marks to the plot; this many pixels of margin keep a point at the plot's edge
# (the first or last epoch, an accuracy of 100%) whole.
EDGE_PX = 8


def _epoch_axis(total_epochs: int | None) -> alt.X:
    scale = (alt.Scale(domain=[1, max(2, total_epochs)], nice=False, padding=EDGE_PX) if total_epochs
             else alt.Scale(zero=False, padding=EDGE_PX))
    return alt.X("epoch:Q", title="epoch", scale=scale, axis=alt.Axis(tickMinStep=1, format="d"))


EPOCH_COLUMNS = METRIC_FIELDS  # a run's metrics.csv columns


def epoch_frame(rows: list[dict]) -> pd.DataFrame:
    """Per-epoch rows (EpochEvent.row() or a run's metrics.csv rows) as a DataFrame with every metric column."""
    frame = pd.DataFrame(rows, columns=list(EPOCH_COLUMNS))
    return frame.astype({c: "float64" for c in EPOCH_COLUMNS if c != "epoch"}).astype({"epoch": "int64"})


def loss_frame(rows: list[dict]) -> pd.DataFrame:
    """Batch reports (epoch, batch, position in epochs, loss, learning rate) as a DataFrame."""
    return pd.DataFrame(rows, columns=["epoch", "batch", "position", "loss", "lr"])


def loss_chart(epochs: pd.DataFrame, total_epochs: int | None = None) -> alt.Chart:
    """Training loss per epoch, a point per epoch with its value in the tooltip."""
    return (
        alt.Chart(epochs, title="Training loss per epoch")
        .mark_line(point=True, color=LOSS_COLOUR, clip=True)
        .encode(
            x=_epoch_axis(total_epochs),
            y=alt.Y("train_loss:Q", title="training loss", scale=alt.Scale(zero=False, padding=EDGE_PX),
                    axis=alt.Axis(format=LOSS_FORMAT)),
            tooltip=[alt.Tooltip("epoch:Q", title="epoch"), alt.Tooltip("train_loss:Q", title="training loss", format=".4f")],
        )
        .add_params(zoom())
        .properties(height=CHART_HEIGHT)
    )


def accuracy_chart(
    epochs: pd.DataFrame, best_epoch: int | None = None, total_epochs: int | None = None, selection: str = "test"
) -> alt.LayerChart:
    """Training, validation and test accuracy per epoch, with the best epoch marked by a dashed rule.

    `best_epoch` is the engine's choice (by validation accuracy when there is a split, else test accuracy:
    `selection` names which); the chart only draws it.
    """
    present = [c for c in ACCURACY_SERIES if c in epochs and epochs[c].notna().any()]
    long = (
        epochs.melt(id_vars=["epoch"], value_vars=present, var_name="series", value_name="accuracy")
        .dropna(subset=["accuracy"])
        .assign(series=lambda d: d["series"].map(ACCURACY_SERIES))
    )
    shown = [ACCURACY_SERIES[c] for c in present]
    colour = alt.Color(
        "series:N", title=None, sort=shown,
        scale=alt.Scale(domain=shown, range=[ACCURACY_COLOURS[s] for s in shown]),
        legend=alt.Legend(orient="bottom"),
    )
    lines = (
        alt.Chart(long)
        .mark_line(point=True, clip=True)  # zoomed in, nothing is drawn over the axes
        .encode(
            x=_epoch_axis(total_epochs),
            y=alt.Y("accuracy:Q", title="accuracy (%)", scale=alt.Scale(zero=False, padding=EDGE_PX),
                    axis=alt.Axis(format=ACCURACY_FORMAT)),
            color=colour,
            tooltip=[alt.Tooltip("epoch:Q", title="epoch"), alt.Tooltip("series:N", title="accuracy"),
                     alt.Tooltip("accuracy:Q", title="%", format=".2f")],
        )
        .add_params(zoom())
    )
    layers: list[alt.Chart] = [lines]
    best = epochs[epochs["epoch"] == best_epoch] if best_epoch is not None else epochs.iloc[0:0]
    if len(best):
        row = best.iloc[0]
        epoch = int(row["epoch"])
        label = f"best{' (val)' if selection == 'validation' else ''}: epoch {epoch}, {row['test_acc']:.2f}%"
        mark = pd.DataFrame({"epoch": [epoch], "accuracy": [row["test_acc"]], "label": [label]})
        base = alt.Chart(mark).encode(x=_epoch_axis(total_epochs))
        last = max(total_epochs or 0, int(epochs["epoch"].max()), 2)
        # keep the label inside a narrow plot: right of the rule in the first ~40% of the axis, else left of it
        right_side = (epoch - 1) / (last - 1) > 0.4
        layers += [
            base.mark_rule(strokeDash=[4, 4], color="#495057", clip=True),
            base.mark_point(shape="diamond", size=140, filled=True, color="#212529", clip=True).encode(
                y="accuracy:Q", tooltip=[alt.Tooltip("label:N", title="best epoch")]),
            base.mark_text(align="right" if right_side else "left", dx=-5 if right_side else 5, baseline="top",
                           fontSize=11, color="#212529", clip=True).encode(y=alt.value(2), text="label:N"),
        ]
    return alt.layer(*layers, title="Accuracy per epoch").properties(height=CHART_HEIGHT)


def smoothed(values: pd.Series, smoothing: float = DEFAULT_SMOOTHING) -> pd.Series:
    """Exponential moving average: s_i = smoothing * s_(i-1) + (1 - smoothing) * x_i, starting at x_0."""
    return values.ewm(alpha=1 - smoothing, adjust=False).mean()


def thinned(frame: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """Every k-th row (and the last) so that at most about `max_points` remain."""
    if len(frame) <= max_points:
        return frame
    step = -(-len(frame) // max_points)
    keep = list(range(0, len(frame), step))
    if keep[-1] != len(frame) - 1:
        keep.append(len(frame) - 1)
    return frame.iloc[keep]


def batch_loss_frame(
    points: pd.DataFrame, smoothing: float = DEFAULT_SMOOTHING, max_points: int = MAX_LOSS_POINTS_DRAWN
) -> pd.DataFrame:
    """The running loss's drawn rows (position, epoch, batch, series, value): each report's loss raw and smoothed
    (before thinning to `max_points`, so the average sees every report). `smoothing` is 0 (the raw line twice)
    to MAX_SMOOTHING."""
    if not 0 <= smoothing <= MAX_SMOOTHING:
        raise ValueError(f"smoothing must be between 0 and {MAX_SMOOTHING} (got {smoothing})")
    frame = points.assign(smoothed=smoothed(points["loss"], smoothing)) if len(points) else points.assign(smoothed=[])
    frame = thinned(frame, max_points)
    long = frame.melt(id_vars=["position", "epoch", "batch"], value_vars=["loss", "smoothed"],
                      var_name="series", value_name="value")
    long["series"] = long["series"].map({"loss": "raw", "smoothed": "smoothed"})
    return long


def batch_loss_layout(single: bool = False) -> alt.Chart:
    """The running loss chart without its data (`batch_loss_frame`'s rows): a live view sends the layout once and
    then only new rows. `single`: one report, which a line would not draw."""
    return (
        alt.Chart(title="Running training loss")
        .mark_line(point=single)
        .encode(
            x=alt.X("position:Q", title="epoch", scale=alt.Scale(zero=False), axis=alt.Axis(format=POSITION_FORMAT)),
            y=alt.Y("value:Q", title="training loss", scale=alt.Scale(zero=False), axis=alt.Axis(format=LOSS_FORMAT)),
            color=alt.Color("series:N", title=None, sort=["raw", "smoothed"],
                            scale=alt.Scale(domain=["raw", "smoothed"], range=["#eba2bc", LOSS_COLOUR]),
                            legend=alt.Legend(orient="bottom")),
            strokeWidth=alt.condition(alt.datum.series == "smoothed", alt.value(2.2), alt.value(1.2)),
            tooltip=[alt.Tooltip("epoch:Q"), alt.Tooltip("batch:Q"), alt.Tooltip("series:N"),
                     alt.Tooltip("value:Q", title="loss", format=".4f")],
        )
        .properties(height=CHART_HEIGHT)
    )


def batch_loss_chart(
    points: pd.DataFrame, smoothing: float = DEFAULT_SMOOTHING, max_points: int = MAX_LOSS_POINTS_DRAWN
) -> alt.Chart:
    """The running training loss report by report (`position` in epochs, `loss`): raw and smoothed; the raw line is
    always drawn, faint, under the smoothed one."""
    long = batch_loss_frame(points, smoothing, max_points)
    return batch_loss_layout(single=len(long) == 2).properties(data=long)


def lr_frame(points: pd.DataFrame, max_points: int = MAX_LOSS_POINTS_DRAWN) -> tuple[pd.DataFrame, bool]:
    """The learning rate's drawn rows (position, lr), and whether its axis is logarithmic: when the rate changes by
    LOG_LR_RATIO or more (a rate of 0, which a log axis cannot show, is then left out)."""
    frame = thinned(points[["position", "lr"]].astype("float64"), max_points)
    positive = frame["lr"][frame["lr"] > 0]
    log = bool(len(positive) > 1 and positive.max() / positive.min() >= LOG_LR_RATIO)
    return (frame[frame["lr"] > 0] if log else frame), log


def lr_layout(log: bool, single: bool = False) -> alt.Chart:
    """The learning-rate chart without its data (`lr_frame`'s rows); on a log axis or a linear one from 0."""
    scale = alt.Scale(type="log") if log else alt.Scale(zero=True)
    return (
        alt.Chart(title="Learning rate")
        # a line through one report would draw nothing
        .mark_line(color=LR_COLOUR, point=alt.OverlayMarkDef(color=LR_COLOUR) if single else False)
        .encode(
            x=alt.X("position:Q", title="epoch", scale=alt.Scale(zero=False), axis=alt.Axis(format=POSITION_FORMAT)),
            y=alt.Y("lr:Q", title="learning rate" + (" (log scale)" if log else ""), scale=scale,
                    axis=alt.Axis(format=LR_FORMAT) if log else alt.Axis(labelExpr=LR_LABEL)),
            tooltip=[alt.Tooltip("position:Q", title="epoch", format=".2f"),
                     alt.Tooltip("lr:Q", title="learning rate", format=".3~e")],
        )
        .properties(height=CHART_HEIGHT)
    )


def lr_chart(points: pd.DataFrame, max_points: int = MAX_LOSS_POINTS_DRAWN) -> alt.Chart:
    """The learning rate over the run (`position` in epochs, `lr`), so that the schedule can be seen: warm-up,
    decay, a fork's fresh start."""
    frame, log = lr_frame(points, max_points)
    return lr_layout(log, single=len(frame) == 1).properties(data=frame)


COMPARE_TITLES = {"test_acc": "test accuracy (%)", "val_acc": "validation accuracy (%)",
                  "train_acc": "training accuracy (%)", "train_loss": "training loss"}


def compare_chart(
    curves: pd.DataFrame, metric: str = "test_acc", branches: pd.DataFrame | None = None,
    total_epochs: int | None = None,
) -> alt.LayerChart:
    """One line per run of `metric` per epoch, a colour per run on shared axes (compare.curves' frames).

    A fork's line starts at its branch point, which is marked by a dashed rule in the fork's colour and an
    open diamond on the parent's value there; the tooltip names the parent and the checkpoint.
    """
    title = COMPARE_TITLES[metric]
    order = list(dict.fromkeys(curves["run"]))
    data = curves[["run", "epoch", metric]].dropna(subset=[metric])
    colour = alt.Color("run:N", title=None, sort=order, scale=alt.Scale(domain=order, scheme="tableau10"),
                       legend=alt.Legend(orient="bottom", columns=2, labelLimit=360))
    x = _epoch_axis(total_epochs)
    lines = (
        alt.Chart(data)
        .mark_line(point=True, clip=True)  # zoomed in, nothing is drawn over the axes
        .encode(
            x=x, color=colour,
            y=alt.Y(f"{metric}:Q", title=title, scale=alt.Scale(zero=False, padding=EDGE_PX),
                    axis=alt.Axis(format=LOSS_FORMAT if metric == "train_loss" else ACCURACY_FORMAT)),
            tooltip=[alt.Tooltip("run:N"), alt.Tooltip("epoch:Q"),
                     alt.Tooltip(f"{metric}:Q", title=title, format=".4f" if metric == "train_loss" else ".2f")],
        )
        .add_params(zoom())
    )
    layers: list[alt.Chart] = [lines]
    if branches is not None and len(branches):
        marks = branches.assign(
            branch=[f"{run} forked from {parent} after epoch {int(e)} ({which} checkpoint)"
                    for run, parent, e, which in zip(branches["run"], branches["parent"], branches["epoch"],
                                                     branches["checkpoint"])]
        )[["run", "epoch", "branch", metric]]
        tip = [alt.Tooltip("branch:N", title="fork")]
        layers.append(alt.Chart(marks).mark_rule(strokeDash=[5, 4], strokeWidth=1.5, clip=True).encode(
            x=x, color=colour, tooltip=tip))
        valued = marks.dropna(subset=[metric])
        if len(valued):
            layers.append(alt.Chart(valued).mark_point(shape="diamond", size=170, filled=False, strokeWidth=2.5,
                                                       clip=True).encode(
                x=x, y=f"{metric}:Q", color=colour, tooltip=tip))
    return alt.layer(*layers, title=f"{title[0].upper()}{title[1:]} per epoch").properties(height=CHART_HEIGHT + 40)
