"""Predictions of a trained model over a split, and the metrics computed from them. numpy and pandas only.

A model's softmax probabilities with the labels (`Predictions`, made by analysis.predict.predict); everything the
Evaluate page shows is a pure function of that: the confusion matrix, per-class accuracy/precision/recall/F1, the
images of one confusion cell and the mistakes ordered by the model's confidence, and the CSV export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cifar_app.data.formats import CLASSES


@dataclass
class Predictions:
    """A model's class probabilities for a split, with the true labels: everything the metrics need.

    Row i is image i of the split, so an index into these arrays is an index into the split.
    """

    labels: np.ndarray  # (N,) int64 true classes
    probs: np.ndarray  # (N, C) float32 softmax probabilities
    classes: tuple[str, ...] = CLASSES

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def confidence(self) -> np.ndarray:
        """The probability the model gave its own answer."""
        return self.probs.max(1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean() * 100) if len(self.labels) else float("nan")

    def __len__(self) -> int:
        return len(self.labels)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int = len(CLASSES)) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    return np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a true class predicted as each class); empty rows stay 0."""
    sums = matrix.sum(1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros(matrix.shape, dtype=np.float64), where=sums > 0)


def confusion_frame(preds: Predictions) -> pd.DataFrame:
    """The confusion matrix in long form: true, predicted, count, share (of the true class), for charts."""
    return confusion_cells(preds.labels, preds.predicted, preds.classes)


def confusion_cells(labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...] = CLASSES) -> pd.DataFrame:
    """`confusion_frame` for any labels and predicted classes (the Dynamics page's, at any epoch)."""
    matrix = confusion_matrix(labels, predicted, len(classes))
    shares = normalize_rows(matrix)
    n = len(classes)
    return pd.DataFrame({
        "true": [classes[i] for i in range(n) for _ in range(n)],
        "predicted": [classes[j] for _ in range(n) for j in range(n)],
        "count": matrix.ravel(),
        "share": shares.ravel(),
    })


def per_class_metrics(labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...] = CLASSES) -> pd.DataFrame:
    """One row per class: accuracy, precision, recall, F1 (percentages) and support.

    accuracy is the coursework's per-class accuracy, the share of the class's images classified correctly;
    it is recall by definition, listed under both names because both are what people look for. A class the
    model never predicts has precision 0 (and F1 0), as scikit-learn reports with zero_division=0.
    """
    matrix = confusion_matrix(labels, predicted, len(classes))
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(1)
    predicted_n = matrix.sum(0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted_n, out=np.zeros_like(tp), where=predicted_n > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return pd.DataFrame({
        "class": list(classes),
        "accuracy": recall * 100,
        "precision": precision * 100,
        "recall": recall * 100,
        "f1": f1 * 100,
        "support": support.astype(np.int64),
    })


def most_confused(preds: Predictions, n: int = 5) -> pd.DataFrame:
    """The n largest off-diagonal cells: true, predicted, count, share (of the true class)."""
    frame = confusion_frame(preds)
    frame = frame[(frame["true"] != frame["predicted"]) & (frame["count"] > 0)]
    frame = frame.sort_values(["count", "true", "predicted"], ascending=[False, True, True])
    return frame.head(n).reset_index(drop=True)


def top_k(probs: np.ndarray, classes: tuple[str, ...] = CLASSES, k: int = 3) -> list[tuple[str, float]]:
    """The k most probable classes of one probability vector, most probable first."""
    order = np.argsort(-np.asarray(probs), kind="stable")[:k]
    return [(classes[i], float(probs[i])) for i in order]


def predictions_table(preds: Predictions) -> pd.DataFrame:
    """One row per image: index (in the split), true, predicted, correct, confidence, p_<class>..."""
    table = pd.DataFrame({
        "index": np.arange(len(preds)),
        "true": pd.Categorical.from_codes(preds.labels, categories=list(preds.classes)),
        "predicted": pd.Categorical.from_codes(preds.predicted, categories=list(preds.classes)),
        "correct": preds.labels == preds.predicted,
        "confidence": preds.confidence,
    })
    for i, name in enumerate(preds.classes):
        table[f"p_{name}"] = preds.probs[:, i]
    return table


def select(
    preds: Predictions, true: int | None = None, predicted: int | None = None, mistakes_only: bool = False,
) -> pd.DataFrame:
    """The rows of `predictions_table` in one confusion cell (or row, or column), most confident first.

    `true=i, predicted=j` is cell (i, j) of the confusion matrix; `mistakes_only` keeps the misclassified
    images (true != predicted), which is how the gallery of mistakes is built. Ties keep the split's order.
    """
    keep = np.ones(len(preds), dtype=bool)
    if true is not None:
        keep &= preds.labels == true
    if predicted is not None:
        keep &= preds.predicted == predicted
    if mistakes_only:
        keep &= preds.labels != preds.predicted
    table = predictions_table(preds)[keep]
    return table.sort_values("confidence", ascending=False, kind="stable").reset_index(drop=True)


def mistakes(preds: Predictions, true: int | None = None, predicted: int | None = None) -> pd.DataFrame:
    """The misclassified images (optionally of one true and/or predicted class), most confident first."""
    return select(preds, true, predicted, mistakes_only=True)


def describe_top(row: pd.Series, classes: tuple[str, ...] = CLASSES, k: int = 3) -> str:
    """'cat 0.62 · dog 0.30 · frog 0.04' for one row of `predictions_table`."""
    probs = np.array([row[f"p_{name}"] for name in classes])
    return " · ".join(f"{name} {p:.2f}" for name, p in top_k(probs, classes, k))


def predictions_csv(preds: Predictions) -> bytes:
    """The predictions as CSV: index, true, predicted, then one probability column per class."""
    table = predictions_table(preds).drop(columns=["correct", "confidence"])
    return table.to_csv(index=False, float_format="%.6f").encode()
