"""The Evaluate page's engine: confusion matrix, per-class metrics, cells, mistakes and CSV, by hand."""

import io

import numpy as np
import pandas as pd
import pytest
import torch

from ui.charts import explore as charts
from cifar_app.store.checkpoints import load_run_model
from cifar_app.analysis.metrics import (
    Predictions, confusion_frame, confusion_matrix, describe_top, mistakes, most_confused, normalize_rows, per_class_metrics, predictions_csv, select, top_k,
)
from cifar_app.analysis.predict import predict
from cifar_app.store.runs import RunStore
from conftest import tiny_cifar
from explore_helpers import trained_runs_dir

CLASSES3 = ("a", "b", "c")
# true:      0 0 1 1 2 2 2
# predicted: 0 1 1 1 2 0 2
LABELS = np.array([0, 0, 1, 1, 2, 2, 2])
PREDICTED = np.array([0, 1, 1, 1, 2, 0, 2])


def probs_for(predicted, confidence):
    """Probability rows whose arg-max is `predicted` with the given confidence, the rest spread evenly."""
    rows = []
    for p, c in zip(predicted, confidence):
        row = np.full(3, (1 - c) / 2)
        row[p] = c
        rows.append(row)
    return np.array(rows, dtype=np.float32)


@pytest.fixture
def preds():
    confidence = [0.9, 0.8, 0.7, 0.6, 0.95, 0.99, 0.5]
    return Predictions(LABELS, probs_for(PREDICTED, confidence), CLASSES3)


def test_confusion_matrix_counts_rows_true_columns_predicted():
    assert confusion_matrix(LABELS, PREDICTED, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]


def test_normalised_rows_are_shares_of_the_true_class_and_empty_rows_stay_zero():
    shares = normalize_rows(np.array([[1, 3], [0, 0]]))
    assert shares.tolist() == [[0.25, 0.75], [0.0, 0.0]]


def test_per_class_metrics_match_hand_computed_values():
    table = per_class_metrics(LABELS, PREDICTED, CLASSES3).set_index("class")
    # a: tp 1 of 2 true, 2 predicted; b: tp 2 of 2 true, 3 predicted; c: tp 2 of 3 true, 2 predicted
    assert table["support"].tolist() == [2, 2, 3]
    assert table["precision"].tolist() == pytest.approx([50, 200 / 3, 100])
    assert table["recall"].tolist() == pytest.approx([50, 100, 200 / 3])
    assert table["accuracy"].tolist() == table["recall"].tolist()
    assert table["f1"].tolist() == pytest.approx([50, 80, 80])


def test_a_class_never_predicted_has_precision_zero_not_nan():
    table = per_class_metrics(np.array([0, 1]), np.array([0, 0]), ("a", "b"))
    assert table["precision"].tolist() == [50, 0] and table["f1"].tolist()[1] == 0
    assert not table.isna().any().any()


def test_predictions_know_their_accuracy_and_confidence(preds):
    assert preds.predicted.tolist() == PREDICTED.tolist()
    assert preds.accuracy == pytest.approx(500 / 7)
    assert preds.confidence.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.95, 0.99, 0.5])


def test_mistakes_are_ordered_most_confident_first_and_filter(preds):
    wrong = mistakes(preds)
    assert wrong["index"].tolist() == [5, 1]  # 0.99 (c as a), then 0.8 (a as b)
    assert wrong["true"].astype(str).tolist() == ["c", "a"]
    assert wrong["predicted"].astype(str).tolist() == ["a", "b"]
    assert mistakes(preds, true=0)["index"].tolist() == [1]
    assert mistakes(preds, predicted=0)["index"].tolist() == [5]
    assert mistakes(preds, true=1).empty


def test_a_confusion_cell_holds_its_images_most_confident_first(preds):
    assert select(preds, true=2, predicted=2)["index"].tolist() == [4, 6]
    assert select(preds, true=1, predicted=1)["index"].tolist() == [2, 3]
    assert select(preds, true=0, predicted=2).empty
    equal = Predictions(np.array([0, 0, 0]), probs_for([1, 1, 1], [0.5, 0.5, 0.5]), CLASSES3)
    assert select(equal, true=0, predicted=1)["index"].tolist() == [0, 1, 2]  # ties keep the split's order


def test_most_confused_pairs_and_long_form(preds):
    frame = confusion_frame(preds)
    assert len(frame) == 9 and frame["count"].sum() == 7
    cell = frame[(frame["true"] == "c") & (frame["predicted"] == "a")].iloc[0]
    assert cell["count"] == 1 and cell["share"] == pytest.approx(1 / 3)
    pairs = most_confused(preds)
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"])) == [("a", "b", 1), ("c", "a", 1)]


def test_top_k_and_its_description(preds):
    assert top_k(np.array([0.1, 0.7, 0.2]), CLASSES3, k=2) == [("b", pytest.approx(0.7)), ("c", pytest.approx(0.2))]
    row = select(preds, true=1, predicted=1).iloc[0]  # image 2: b 0.70, a 0.15, c 0.15
    assert describe_top(row, CLASSES3) == "b 0.70 · a 0.15 · c 0.15"


def test_the_csv_holds_index_labels_and_every_probability(preds):
    table = pd.read_csv(io.BytesIO(predictions_csv(preds)))
    assert list(table.columns) == ["index", "true", "predicted", "p_a", "p_b", "p_c"]
    assert table["index"].tolist() == list(range(7))
    assert table["true"].tolist() == ["a", "a", "b", "b", "c", "c", "c"]
    assert table["predicted"].tolist() == ["a", "b", "b", "b", "c", "a", "c"]
    assert np.allclose(table[["p_a", "p_b", "p_c"]].sum(axis=1), 1, atol=1e-5)


def test_predict_scores_a_checkpoint_as_its_training_run_did():
    """The Evaluate page's figures for a run's best checkpoint (a run with flip TTA) are the ones the training
    loop recorded at that epoch, and row i is test image i with its own label."""
    run = RunStore(trained_runs_dir()).runs()[0]
    loaded = load_run_model(run, "best")
    data = tiny_cifar()
    preds = predict(loaded.model, data.test_images, data.test_labels, torch.device("cpu"), loaded.classes,
                    tta_flip=loaded.config.tta_flip)
    recorded = {row["epoch"]: row["test_acc"] for row in run.metrics()}
    assert loaded.config.tta_flip and preds.accuracy == pytest.approx(recorded[loaded.epoch])
    assert preds.accuracy > 30  # the tiny run learned something (chance is 10%)
    assert preds.probs.shape == (100, 10) and np.allclose(preds.probs.sum(axis=1), 1, atol=1e-5)
    assert (preds.labels == data.test_labels.numpy()).all()
    assert confusion_matrix(preds.labels, preds.predicted).sum() == 100


def test_evaluation_charts_build_from_the_frames(preds):
    classes = list(CLASSES3)
    heat = charts.confusion_chart(confusion_frame(preds), classes).to_dict()
    assert heat["params"][0]["name"] == charts.CONFUSION_SELECTION
    assert heat["layer"][1]["encoding"]["text"] == {"field": "count", "type": "quantitative", "format": "d"}
    shares = charts.confusion_chart(confusion_frame(preds), classes, normalized=True).to_dict()
    assert shares["layer"][0]["encoding"]["color"]["field"] == "share"  # shades and numbers: shares of the row
    assert shares["layer"][1]["encoding"]["text"]["field"] == "share"
    assert shares["layer"][0]["encoding"]["y"]["sort"] == classes  # the dataset's order, as the tables beside it
    bars = charts.per_class_chart(per_class_metrics(LABELS, PREDICTED, CLASSES3), classes).to_dict()
    drawn = pd.DataFrame(bars["datasets"][bars["data"]["name"]])
    assert len(drawn) == 9 and set(drawn["metric"]) == {"precision", "recall", "f1"}  # 3 bars for each class
    assert drawn.set_index(["class", "metric"]).loc[("a", "recall"), "percent"] == pytest.approx(50)  # 1 of 2 a's
    assert bars["encoding"]["y"]["scale"]["domain"] == [0, 100]
    counts = pd.DataFrame({"split": ["train"] * 3, "class": classes, "count": [5, 6, 7]})
    assert charts.class_balance_chart(counts, classes).to_dict()["mark"]["type"] == "bar"
    top = pd.DataFrame({"class": ["b", "a"], "probability": [0.7, 0.2]})
    assert charts.top_k_chart(top).to_dict()["encoding"]["y"]["sort"] == "-x"  # most probable on top
