"""How each image was learned: a run's per-image record (store/records.py) read back, and what it shows.
numpy and pandas only: a page that reads records pays no torch import.

Analysis (on `Records`): Dataset Cartography's confidence and variability (Swayamdipta et al., 2020);
forgetting events (Toneva et al., 2019), the first epoch an image was right and the epoch from which it stayed
right; a likely-mislabelled score (hard to learn, and one other class consistently more probable than the
label: the area under the margin of Pleiss et al., 2020, on probabilities); the test set's per-class accuracy,
confusion and changed predictions at each epoch. `python -m cifar_app.dynamics RUN` prints the summary.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cifar_app.analysis.metrics import confusion_cells
from cifar_app.data.formats import CLASSES
from cifar_app.store.records import MISSING, RECORDS_DIR, epoch_of

log = logging.getLogger(__name__)


# Dataset Cartography's regions: a spread of the true-class probability over epochs this large is ambiguous;
# below it, a mean this high is easy to learn and a lower one hard to learn.
AMBIGUOUS_VARIABILITY = 0.2


EASY_CONFIDENCE = 0.5


REGIONS = ("easy to learn", "ambiguous", "hard to learn")


# Likely mislabelled: on average over the epochs, one other class got at least this much more probability than
# the label (a score above 0 only says the label lost on average, true of many merely hard images early on).
MISLABEL_MARGIN = 0.3


NO_RECORDS = (
    "This run has no per-image records: it was trained before the app kept them, or with recording off "
    "(`--no-records`). Runs record by default (the Train page's Run tab: 'Record how each image is learned'). "
    "To get records for this model, fork it (Runs page, or `python -m cifar_app.train --fork {run_id}`): the "
    "fork's record starts at its branch point; or train the recipe again."
)


@dataclass
class Records:
    """A run's record, read whole. Train arrays are (epochs, images), test arrays (tested epochs, images)."""

    folder: Path
    meta: dict[str, Any]
    train_index: np.ndarray  # (N,) indices into CIFAR-10's training set
    train_labels: np.ndarray  # (N,)
    epochs: np.ndarray  # (E,) 1-based epoch numbers of the train arrays' rows
    p_true: np.ndarray  # (E, N) float32, NaN where not trained on
    correct: np.ndarray  # (E, N) int8: 1 right, 0 wrong, -1 not trained on that epoch
    other: np.ndarray  # (E, N) int16, -1 where not trained on
    p_other: np.ndarray  # (E, N) float32
    test_labels: np.ndarray  # (M,)
    test_epochs: np.ndarray  # (T,)
    test_pred: np.ndarray  # (T, M) int64
    test_p_true: np.ndarray  # (T, M) float32
    classes: tuple[str, ...] = CLASSES

    @property
    def first_epoch(self) -> int:
        return int(self.meta.get("first_epoch", 1))

    @property
    def origin(self) -> str:
        """'' for a record that starts with its run, else why it starts later (a fork's branch point)."""
        return self.meta.get("origin", "")

    def data_mismatch(self, train_labels: np.ndarray, test_labels: np.ndarray, label_set: bool = False) -> str | None:
        """Why a dataset with these labels is not the one this run trained on (None when it is), so that its
        images would not be the ones the record describes. A run on a `label_set` has other training labels than
        the dataset's own (the set checked them against the copy when the run started)."""
        if len(self.train_index) and self.train_index.max() >= len(train_labels) or \
                len(self.test_labels) != len(test_labels):
            return "The data folder in the sidebar holds another dataset than this run trained on: its images cannot be shown."
        if not label_set and not np.array_equal(train_labels[self.train_index], self.train_labels):
            return "The labels in the sidebar's data folder differ from this run's: the images shown may not be the ones it trained on."
        return None

    def predicted(self) -> np.ndarray:
        """(E, N) the class the model predicted for each training image at each epoch (-1: not trained on)."""
        return np.where(self.correct == 1, self.train_labels[None, :], self.other).astype(np.int64)

    def row_of(self, index: int) -> int | None:
        """The row of CIFAR-10 training image `index` in the train arrays (None: not recorded, e.g. validation)."""
        rows = np.flatnonzero(self.train_index == index)
        return int(rows[0]) if len(rows) else None

    def describe(self) -> str:
        """'epochs 4-6 of 8,000 training images and 10,000 test images (tested at 3 epochs)'."""
        if not len(self.epochs):
            return "no epoch recorded yet"
        span = f"epoch {self.epochs[0]}" if len(self.epochs) == 1 else f"epochs {self.epochs[0]}-{self.epochs[-1]}"
        return (f"{span} of {len(self.train_labels):,} training images and {len(self.test_labels):,} test images "
                f"(tested at {len(self.test_epochs)} epoch{'s' if len(self.test_epochs) != 1 else ''})")


def load_records(run_path: Path) -> Records | None:
    """A run's record (None when it has none); epochs not yet written are simply absent."""
    folder = Path(run_path) / RECORDS_DIR
    try:
        meta = json.loads((folder / "meta.json").read_text())
        train_index = np.load(folder / "train_index.npy").astype(np.int64)
        train_labels = np.load(folder / "train_labels.npy").astype(np.int64)
        test_labels = np.load(folder / "test_labels.npy").astype(np.int64)
    except (OSError, ValueError) as error:
        if folder.exists():
            log.warning("unreadable record in %s (%s)", folder, error)
        return None
    n, m = len(train_index), len(test_labels)
    train: dict[int, Any] = {}
    test: dict[int, Any] = {}
    for path in sorted(folder.glob("epoch-*.npz")):
        try:
            with np.load(path) as saved:
                arrays = {k: saved[k] for k in saved.files}
        except (OSError, ValueError, EOFError) as error:  # a file from another version, or damaged by hand
            log.warning("skipping %s (%s)", path, error)
            continue
        epoch = epoch_of(path)
        train[epoch] = arrays
        if "test_pred" in arrays:
            test[epoch] = arrays

    def stack(source: dict[int, Any], key: str, width: int, dtype: Any) -> np.ndarray:
        if not source:
            return np.zeros((0, width), dtype=dtype)
        return np.stack([source[e][key] for e in sorted(source)]).astype(dtype)

    correct = stack(train, "train_correct", n, np.int16)
    other = stack(train, "train_other", n, np.int16)
    return Records(
        folder, meta, train_index, train_labels, np.array(sorted(train), dtype=np.int64),
        stack(train, "train_p_true", n, np.float32), np.where(correct == MISSING, -1, correct).astype(np.int8),
        np.where(other == MISSING, -1, other), stack(train, "train_p_other", n, np.float32),
        test_labels, np.array(sorted(test), dtype=np.int64), stack(test, "test_pred", m, np.int64),
        stack(test, "test_p_true", m, np.float32),
    )


def forgetting(correct: np.ndarray, epochs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, from `correct` (E, N: 1 right, 0 wrong, -1 not seen that epoch) at `epochs`:
    - forgetting events: right at one of its recorded epochs, wrong at its next recorded one;
    - the first epoch it was right (NaN: never);
    - the epoch from which it stayed right to its last record (NaN: wrong at its last record)."""
    n = correct.shape[1]
    forgets = np.zeros(n, dtype=np.int64)
    first = np.full(n, np.nan)
    since = np.full(n, np.nan)
    previous = np.full(n, -1, dtype=np.int8)
    for epoch, now in zip(epochs, correct):
        seen, right = now >= 0, now == 1
        forgets += seen & (previous == 1) & (now == 0)
        first = np.where(right & np.isnan(first), epoch, first)
        since = np.where(right & (previous != 1), epoch, since)  # a run of right epochs begins
        since = np.where(seen & (now == 0), np.nan, since)
        previous = np.where(seen, now, previous)
    return forgets, first, since


def _class_votes(classes: np.ndarray, weights: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, C): the sum of `weights` over epochs for each image and class in `classes` (E, N; -1 skipped)."""
    e, n = classes.shape
    keep = classes >= 0
    cells = (np.arange(n)[None, :] * num_classes + np.where(keep, classes, 0))[keep]
    return np.bincount(cells, weights=weights[keep], minlength=n * num_classes).reshape(n, num_classes)


def image_table(records: Records) -> pd.DataFrame:
    """One row per recorded training image:
    index (in CIFAR-10's training set), label, confidence (mean true-class probability over its epochs),
    variability (their standard deviation), correctness (share of its epochs it was right), epochs (how many it
    was trained on), forgotten (forgetting events), first_learned, learned_at (from when it stayed right),
    most_predicted (the class predicted most often; ties: the later), most_predicted_tied (another class was
    predicted as often), looks_like (the other class given the
    most probability over the epochs), looks_like_p (that class's mean probability, 0 at epochs where another
    was the runner-up), mislabel_score (looks_like_p - confidence: above 0, one other class beat the label on
    average), region (easy to learn, ambiguous, hard to learn)."""
    classes, n = records.classes, len(records.train_labels)
    p = records.p_true
    seen = records.correct >= 0
    count = seen.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.nansum(p, 0) / count
        variability = np.sqrt(np.nansum((p - confidence) ** 2, 0) / count)
        correctness = (records.correct == 1).sum(0) / count
    forgets, first, since = forgetting(records.correct, records.epochs)
    later = 1 + 1e-3 * np.arange(len(records.epochs))[:, None]  # a tie between classes goes to the later epochs
    votes = _class_votes(records.predicted(), np.broadcast_to(later, p.shape), len(classes))
    most = votes.argmax(1)
    counts = _class_votes(records.predicted(), np.ones(p.shape), len(classes))  # whole epochs, no tie-break
    tied = (counts == counts.max(1, keepdims=True)).sum(1) > 1
    pulls = _class_votes(records.other, np.nan_to_num(records.p_other), len(classes))
    looks = pulls.argmax(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        looks_p = pulls[np.arange(n), looks] / count
    score = looks_p - confidence
    region = np.where(variability >= AMBIGUOUS_VARIABILITY, REGIONS[1],
                      np.where(confidence >= EASY_CONFIDENCE, REGIONS[0], REGIONS[2]))
    names = np.array(classes)
    table = pd.DataFrame({
        "index": records.train_index, "label": names[records.train_labels], "confidence": confidence,
        "variability": variability, "correctness": correctness, "epochs": count, "forgotten": forgets,
        "first_learned": first, "learned_at": since, "most_predicted": names[most],
        "most_predicted_tied": tied, "looks_like": names[looks],
        "looks_like_p": looks_p, "mislabel_score": score, "region": region,
    })
    return table[count > 0]  # the frame's index is the image's row in the record's arrays


def most_forgotten(table: pd.DataFrame) -> pd.DataFrame:
    """Images forgotten at least once, the most often first (then the least confident)."""
    return table[table["forgotten"] > 0].sort_values(["forgotten", "confidence"], ascending=[False, True], kind="stable")


def never_learned(table: pd.DataFrame) -> pd.DataFrame:
    """Images never classified correctly in any recorded epoch, the least confident first."""
    return table[table["first_learned"].isna()].sort_values("confidence", kind="stable")


def learned_last(table: pd.DataFrame) -> pd.DataFrame:
    """Images right at their last record, the ones that became right for good latest first."""
    return table[table["learned_at"].notna()].sort_values(["learned_at", "confidence"], ascending=[False, True],
                                                          kind="stable")


def likely_mislabelled(table: pd.DataFrame) -> pd.DataFrame:
    """Hard to learn, and one other class consistently more probable than the label: mislabel_score at least
    MISLABEL_MARGIN, the highest first."""
    return table[table["mislabel_score"] >= MISLABEL_MARGIN].sort_values("mislabel_score", ascending=False,
                                                                          kind="stable")


# name -> (how the list is made, what it means in one sentence)
LISTS = {
    "likely mislabelled": (likely_mislabelled, "hard to learn, and one other class was consistently more probable "
                           "than the label: its mean probability over the epochs beat the label's by at least "
                           f"{MISLABEL_MARGIN} (the mislabel score); the highest first"),
    "most forgotten": (most_forgotten, "right at one epoch, wrong at the next (a forgetting event), most often"),
    "never learned": (never_learned, "wrong at every recorded epoch"),
    "learned last": (learned_last, "right from this epoch to the end; the latest first"),
}


def region_counts(table: pd.DataFrame) -> dict[str, int]:
    counts = table["region"].value_counts()
    return {region: int(counts.get(region, 0)) for region in REGIONS}


def trajectory(records: Records, split: str, index: int) -> pd.DataFrame:
    """One image's true-class probability and predicted class at each recorded epoch: epoch, p_true,
    predicted, correct. Empty when the image is not in the record (a validation image, or no epoch yet)."""
    names = np.array(records.classes)
    if split == "train":
        row = records.row_of(index)
        if row is None:
            return pd.DataFrame(columns=["epoch", "p_true", "predicted", "correct"])
        seen = records.correct[:, row] >= 0
        predicted = records.predicted()[seen, row]
        return pd.DataFrame({"epoch": records.epochs[seen], "p_true": records.p_true[seen, row],
                             "predicted": names[predicted], "correct": records.correct[seen, row] == 1})
    predicted = records.test_pred[:, index]
    return pd.DataFrame({"epoch": records.test_epochs, "p_true": records.test_p_true[:, index],
                         "predicted": names[predicted], "correct": predicted == records.test_labels[index]})


def class_accuracy_over_epochs(records: Records) -> pd.DataFrame:
    """epoch, class, accuracy (%) at each tested epoch, plus class 'all' for the whole test set."""
    rows = []
    labels = records.test_labels
    for epoch, predicted in zip(records.test_epochs, records.test_pred):
        right = predicted == labels
        rows.append({"epoch": int(epoch), "class": "all", "accuracy": 100 * right.mean()})
        for c, name in enumerate(records.classes):
            mine = labels == c
            if mine.any():
                rows.append({"epoch": int(epoch), "class": name, "accuracy": 100 * right[mine].mean()})
    return pd.DataFrame(rows, columns=["epoch", "class", "accuracy"])


def predictions_at(records: Records, epoch: int) -> np.ndarray:
    """The test set's predicted classes at a tested epoch."""
    (row,) = np.flatnonzero(records.test_epochs == epoch)
    return records.test_pred[row]


def confusion_at(records: Records, epoch: int) -> pd.DataFrame:
    """The confusion matrix at a tested epoch, in long form (as `metrics.confusion_frame`)."""
    return confusion_cells(records.test_labels, predictions_at(records, epoch), records.classes)


def cell_images(records: Records, epoch: int, true: int, predicted: int) -> pd.DataFrame:
    """The test images of one confusion cell at `epoch`: index, p_true; the least sure of their label first."""
    (row,) = np.flatnonzero(records.test_epochs == epoch)
    keep = np.flatnonzero((records.test_labels == true) & (records.test_pred[row] == predicted))
    table = pd.DataFrame({"index": keep, "p_true": records.test_p_true[row, keep]})
    return table.sort_values("p_true", kind="stable").reset_index(drop=True)


CHANGES = {"fixed": "wrong, then right", "broken": "right, then wrong", "switched": "wrong, then wrong otherwise"}


def changed_predictions(records: Records, before: int, after: int) -> pd.DataFrame:
    """Test images whose predicted class differs between two tested epochs: index, label, before, after,
    change (fixed, broken or switched)."""
    names = np.array(records.classes)
    labels, first, second = records.test_labels, predictions_at(records, before), predictions_at(records, after)
    keep = np.flatnonzero(first != second)
    change = np.where(second[keep] == labels[keep], "fixed",
                      np.where(first[keep] == labels[keep], "broken", "switched"))
    return pd.DataFrame({"index": keep, "label": names[labels[keep]], "before": names[first[keep]],
                         "after": names[second[keep]], "change": change})


def summary_lines(records: Records, run_name: str, top: int = 10) -> list[str]:
    lines = [f"run {run_name}: {records.describe()}"]
    if records.origin:
        lines.append(f"the record starts at epoch {records.first_epoch}: {records.origin}")
    table = image_table(records)
    if table.empty:
        lines.append("no epoch has been recorded yet: records are written at the end of each epoch")
        return lines
    n = len(table)
    lines.append("regions of the data map (confidence = mean true-class probability, variability = its spread):")
    for region, count in region_counts(table).items():
        lines.append(f"  {region:<14} {count:>7,}  ({100 * count / n:.1f}%)")
    forgotten, never = most_forgotten(table), never_learned(table)
    lines.append(f"forgotten at least once: {len(forgotten):,}; never learned: {len(never):,}; "
                 f"likely mislabelled (score >= {MISLABEL_MARGIN}): {len(likely_mislabelled(table)):,}")
    lines.append(f"\nmost forgotten (top {top}):")
    lines.append(f"  {'index':>6}  {'label':<11}{'forgotten':>9}  most predicted")
    for _, r in forgotten.head(top).iterrows():
        lines.append(f"  {r['index']:>6}  {r['label']:<11}{r['forgotten']:>9}  {r['most_predicted']}")
    lines.append(f"\nlikely mislabelled (top {top}):")
    lines.append(f"  {'index':>6}  {'label':<11}{'looks like':<11}{'score':>6}{'confidence':>11}")
    for _, r in likely_mislabelled(table).head(top).iterrows():
        lines.append(f"  {r['index']:>6}  {r['label']:<11}{r['looks_like']:<11}{r['mislabel_score']:>6.2f}"
                     f"{r['confidence']:>11.2f}")
    if len(records.test_epochs):
        accuracy = class_accuracy_over_epochs(records)
        last = accuracy[(accuracy["epoch"] == records.test_epochs[-1]) & (accuracy["class"] == "all")]
        lines.append(f"\ntest accuracy at epoch {records.test_epochs[-1]}: {last['accuracy'].iloc[0]:.2f}%")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m cifar_app.dynamics RUN`: the record's summary; 1 when the run or its record is missing."""
    import argparse

    from cifar_app.store.runs import Run, RunStore

    parser = argparse.ArgumentParser(prog="python -m cifar_app.dynamics",
                                     description="How each image of a run was learned: the record's summary.")
    parser.add_argument("run", help="a run id in the runs folder, or the path of a run folder")
    parser.add_argument("--runs-dir", default=None, help="where runs are saved (default $CIFAR_RUNS_DIR or ./runs)")
    parser.add_argument("--top", type=int, default=10, help="rows of each list")
    parser.add_argument("--csv", default=None, metavar="PATH", help="also write the per-image table as CSV")
    args = parser.parse_args(argv)
    path = Path(args.run)
    try:
        run = Run(path) if (path / "config.json").is_file() else RunStore(args.runs_dir).get(args.run)
    except KeyError as error:
        print(f"error: {error.args[0]}")
        return 1
    records = load_records(run.path)
    if records is None:
        print(NO_RECORDS.format(run_id=run.id).replace("`", ""))
        return 1
    print("\n".join(summary_lines(records, run.name, args.top)))
    if args.csv:
        image_table(records).to_csv(args.csv, index=False, float_format="%.4f")
        print(f"\nper-image table written to {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
