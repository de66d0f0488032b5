"""The training charts: pure builders, checked on the Vega-Lite spec they produce: what a user sees and can do."""

import math

import pandas as pd
import pytest

from ui.charts import training as charts


def rows(n, val=False):
    return [{"epoch": i, "train_loss": 2.0 / i, "train_acc": 40 + 10 * i, "val_acc": 38 + 9 * i if val else None,
             "test_acc": 35 + 9 * i if i != 2 else 30.0, "lr": 1e-3, "seconds": 1.0, "images_per_s": 100.0}
            for i in range(1, n + 1)]


def layer_data(spec):
    return [spec["datasets"][layer.get("data", spec.get("data"))["name"]] for layer in spec["layer"]]


def test_the_accuracy_chart_has_a_point_per_epoch_and_marks_the_best_epoch():
    frame = charts.epoch_frame(rows(3))
    spec = charts.accuracy_chart(frame, best_epoch=3, total_epochs=25).to_dict()
    lines, rule, *_ = layer_data(spec)
    assert {r["series"] for r in lines} == {"training", "test"}  # no validation split: no validation line
    assert len(lines) == 6 and rule[0]["epoch"] == 3 and rule[0]["label"] == "best: epoch 3, 62.00%"
    assert spec["layer"][0]["encoding"]["x"]["scale"]["domain"] == [1, 25]
    assert any(t["field"] == "accuracy" for t in spec["layer"][0]["encoding"]["tooltip"])


def test_a_validation_split_adds_its_line_and_no_best_epoch_draws_no_mark():
    spec = charts.accuracy_chart(charts.epoch_frame(rows(2, val=True))).to_dict()
    assert len(spec["layer"]) == 1
    assert {r["series"] for r in layer_data(spec)[0]} == {"training", "validation", "test"}
    empty = charts.accuracy_chart(charts.epoch_frame([])).to_dict()  # a run before its first epoch
    assert len(empty["layer"]) == 1 and layer_data(empty) == [[]]  # no lines yet, and no best-epoch mark


def test_the_running_loss_is_drawn_raw_and_smoothed():
    points = charts.loss_frame([{"epoch": 1, "batch": b, "position": b / 4, "loss": l}
                                for b, l in zip(range(1, 5), [2.0, 1.0, 2.0, 1.0])])
    smooth = charts.smoothed(points["loss"], 0.5).tolist()
    assert smooth == [2.0, 1.5, 1.75, 1.375]
    spec = charts.batch_loss_chart(points).to_dict()
    data = spec["datasets"][spec["data"]["name"]]
    assert sorted({d["series"] for d in data}) == ["raw", "smoothed"] and len(data) == 8
    assert charts.loss_chart(charts.epoch_frame(rows(2))).to_dict()["mark"]["point"] is True
    empty = charts.batch_loss_chart(charts.loss_frame([])).to_dict()  # before the first report
    assert empty["datasets"][empty["data"]["name"]] == []
    assert empty["encoding"]["color"]["scale"]["domain"] == ["raw", "smoothed"]  # the legend is there already


def test_a_long_run_draws_a_thinned_loss_line_smoothed_over_every_report():
    points = charts.loss_frame([{"epoch": 1, "batch": i, "position": i / 5000, "loss": float(i % 2)}
                                for i in range(1, 5001)])
    spec = charts.batch_loss_chart(points, max_points=100).to_dict()
    data = spec["datasets"][spec["data"]["name"]]
    raw = [d for d in data if d["series"] == "raw"]
    assert 90 <= len(raw) <= 101 and raw[-1]["batch"] == 5000
    assert abs([d for d in data if d["series"] == "smoothed"][-1]["value"] - 0.5) < 0.1


def losses(n, smoothing_check=False):
    return charts.loss_frame([{"epoch": 1, "batch": b, "position": b / 100, "loss": 2.0 - b / 100 + (b % 2) / 2}
                              for b in range(1, n + 1)])


def lrs(values):
    return pd.DataFrame({"position": [i / 10 for i in range(1, len(values) + 1)], "lr": values})


def params(spec):
    """Every parameter of a chart, its layers' included."""
    return [*spec.get("params", []), *(p for layer in spec.get("layer", []) for p in layer.get("params", []))]


def quantitative_axes(spec):
    """(channel, field, axis) of every quantitative x and y the chart draws."""
    encodings = [spec.get("encoding", {}), *(layer.get("encoding", {}) for layer in spec.get("layer", []))]
    return [(channel, enc[channel]["field"], enc[channel].get("axis", {})) for enc in encodings
            for channel in ("x", "y") if channel in enc and enc[channel].get("type") == "quantitative"]


def one_point_charts():
    one = charts.epoch_frame(rows(1))
    curves = one.assign(run="only run", run_id="r1")
    return {
        "loss": charts.loss_chart(one), "accuracy": charts.accuracy_chart(one, best_epoch=1),
        "compare loss": charts.compare_chart(curves, "train_loss"), "compare test": charts.compare_chart(curves),
        "running loss": charts.batch_loss_chart(losses(1)), "lr": charts.lr_chart(lrs([1e-3])),
    }


@pytest.mark.parametrize("name", ["loss", "accuracy", "compare loss", "compare test"])
def test_the_epoch_charts_zoom_and_pan_along_the_epochs(name):
    spec = one_point_charts()[name].to_dict()
    (zoom,) = [p for p in params(spec) if p["name"] == charts.ZOOM]
    # wheel zooms and drag pans the x axis only (the y axis keeps fitting the values); a double-click resets
    assert zoom["bind"] == "scales" and zoom["select"] == {"type": "interval", "encodings": ["x"], "clear": "dblclick"}
    layers = spec.get("layer", [spec])
    assert all(layer["mark"].get("clip") for layer in layers)  # zoomed in, nothing spills over the axes


def test_the_same_curves_make_the_same_spec_so_a_zoom_survives_a_redraw():
    frame = charts.epoch_frame(rows(3))
    assert charts.accuracy_chart(frame, 3, 25).to_dict() == charts.accuracy_chart(frame, 3, 25).to_dict()


@pytest.mark.parametrize("name", ["loss", "accuracy", "compare loss", "compare test", "running loss", "lr"])
def test_a_chart_with_one_point_labels_its_axes_briefly(name):
    spec = one_point_charts()[name].to_dict()
    axes = quantitative_axes(spec)
    labelled = {(channel, field) for channel, field, axis in axes if "format" in axis or "labelExpr" in axis}
    # layers share an axis: one layer's format labels it
    assert axes and labelled == {(channel, field) for channel, field, _ in axes}, axes  # never 2.899619


def test_the_running_loss_keeps_its_raw_line_at_every_smoothing():
    points = losses(40)
    for smoothing in (0.0, 0.5, charts.MAX_SMOOTHING):
        spec = charts.batch_loss_chart(points, smoothing=smoothing).to_dict()
        data = pd.DataFrame(spec["datasets"][spec["data"]["name"]])
        raw, smooth = (data[data["series"] == s]["value"].tolist() for s in ("raw", "smoothed"))
        assert raw == points["loss"].tolist()
        if smoothing == 0:
            assert smooth == raw
        else:  # the heavier the smoothing, the less the line zig-zags
            assert pd.Series(smooth).diff().abs().sum() < pd.Series(raw).diff().abs().sum()
    with pytest.raises(ValueError, match="smoothing"):
        charts.batch_loss_chart(points, smoothing=1.0)  # would stay at the first report forever


def test_a_schedule_spanning_decades_is_drawn_on_a_log_axis():
    warmup_and_decay = [1e-4, 1e-3, 4e-3, 2e-3, 1e-4, 1.6e-8, 0.0]  # one-cycle, annealed to (almost) nothing
    spec = charts.lr_chart(lrs(warmup_and_decay)).to_dict()
    assert spec["encoding"]["y"]["scale"]["type"] == "log" and "log scale" in spec["encoding"]["y"]["title"]
    drawn = spec["datasets"][spec["data"]["name"]]
    assert [d["lr"] for d in drawn] == warmup_and_decay[:-1]  # a rate of 0 has no place on a log axis
    assert spec["encoding"]["x"]["field"] == "position" and spec["encoding"]["x"]["title"] == "epoch"


def test_a_constant_or_gently_changing_rate_is_drawn_on_a_linear_axis_from_zero():
    for values in ([1e-3] * 5, [4e-3, 3e-3, 2e-3, 1e-3]):
        y = charts.lr_chart(lrs(values)).to_dict()["encoding"]["y"]
        assert y["scale"].get("type", "linear") == "linear" and y["scale"]["zero"] is True


def test_a_long_run_draws_a_thinned_schedule_that_keeps_its_end():
    values = [1e-3 * (1 - i / 5000) + 1e-6 for i in range(5000)]
    spec = charts.lr_chart(lrs(values), max_points=100).to_dict()
    drawn = spec["datasets"][spec["data"]["name"]]
    assert 90 <= len(drawn) <= 101 and drawn[-1]["lr"] == values[-1] and drawn[0]["lr"] == values[0]


def test_a_single_report_is_drawn_as_a_point():
    assert one_point_charts()["lr"].to_dict()["mark"]["point"]
    assert one_point_charts()["running loss"].to_dict()["mark"]["point"]
    assert charts.lr_chart(lrs([1e-3, 1e-3])).to_dict()["mark"]["point"] is False
