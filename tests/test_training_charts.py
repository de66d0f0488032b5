"""The training charts: pure builders, checked on the Vega-Lite spec they produce."""

import math

import pandas as pd

from cifar_app import charts


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
    assert charts.accuracy_chart(charts.epoch_frame([])).to_dict()  # an empty run still draws


def test_the_running_loss_is_drawn_raw_and_smoothed():
    points = charts.loss_frame([{"epoch": 1, "batch": b, "position": b / 4, "loss": l}
                                for b, l in zip(range(1, 5), [2.0, 1.0, 2.0, 1.0])])
    smooth = charts.smoothed(points["loss"], 0.5).tolist()
    assert smooth == [2.0, 1.5, 1.75, 1.375]
    spec = charts.batch_loss_chart(points).to_dict()
    data = spec["datasets"][spec["data"]["name"]]
    assert sorted({d["series"] for d in data}) == ["raw", "smoothed"] and len(data) == 8
    assert charts.loss_chart(charts.epoch_frame(rows(2))).to_dict()["mark"]["point"] is True
    assert charts.batch_loss_chart(charts.loss_frame([])).to_dict()


def test_a_long_run_draws_a_thinned_loss_line_smoothed_over_every_report():
    points = charts.loss_frame([{"epoch": 1, "batch": i, "position": i / 5000, "loss": float(i % 2)}
                                for i in range(1, 5001)])
    spec = charts.batch_loss_chart(points, max_points=100).to_dict()
    data = spec["datasets"][spec["data"]["name"]]
    raw = [d for d in data if d["series"] == "raw"]
    assert 90 <= len(raw) <= 101 and raw[-1]["batch"] == 5000
    assert abs([d for d in data if d["series"] == "smoothed"][-1]["value"] - 0.5) < 0.1
