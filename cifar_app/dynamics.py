"""How each image is learned: per-image records of a training run, and what they show.

Recording (`Recorder`, driven by the training loop). Each training step already computes its batch's logits;
the recorder copies them, on the device, into one (training images, classes) buffer at the batch's places in
the epoch's shuffled order (one `index_copy_` per batch: no host sync, no extra pass over the data). At the
epoch's end the buffer becomes four compact arrays, the test set's logits from the evaluation that already
ran become two, and all of it is copied to the host once and written as one file. The partial epoch's buffer
is part of every checkpoint, so a resume (after a stop, a kill or a stop during evaluation) continues the
record exactly as the uninterrupted run would have written it.

On disk, in the run folder:
    dynamics/
      meta.json         format version, the first recorded epoch, and where a fork's record begins
      train_index.npy   int32: each recorded training image's index in CIFAR-10's training set (through the
                        validation split and a training subset); entry i of every train array is this image
      train_labels.npy  uint8, and test_labels.npy (test images keep their own order: index = position)
      epoch-0001.npz    train_p_true f16, train_correct u8 (255: not trained on this epoch; training drops the
                        last partial batch), train_other u8 (the most probable class other than the label),
                        train_p_other f16; test_pred u8 and test_p_true f16 when the epoch was tested
Each epoch's file is written once, atomically (a resumed run rewrites it with the same bytes), so a reader sees
whole epochs while the run trains.

Analysis (numpy, on `Records`): Dataset Cartography's confidence and variability (Swayamdipta et al., 2020);
forgetting events (Toneva et al., 2019), the first epoch an image was right and the epoch from which it stayed
right; a likely-mislabelled score (hard to learn, and one other class consistently more probable than the
label: the area under the margin of Pleiss et al., 2020, on probabilities); the test set's per-class accuracy,
confusion and changed predictions at each epoch. `python -m cifar_app.dynamics RUN` prints the summary.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cifar_app.atomic import atomic_write_bytes, atomic_write_json
from cifar_app.data import CLASSES
from cifar_app.evaluate import confusion_cells

log = logging.getLogger(__name__)

RECORDS_DIR = "dynamics"
VERSION = 1
MISSING = 255  # train_correct / train_other of an image the epoch did not train on
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


def epoch_file(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch:04d}.npz"


def _epoch_of(path: Path) -> int:
    return int(path.stem.split("-")[1])


# ---------------------------------------------------------------------------------------------------------
# Recording, inside the training loop


class Recorder:
    """Collects one run's per-image records as it trains; see the module's docstring for what and where.

    The loop calls `begin_epoch` before an epoch's first batch (of this session), `batch` after each step,
    `test` with the test pass's logits, `end_epoch` when the epoch's metrics are written, and puts `state()`
    into every checkpoint."""

    def __init__(self, folder: Path, order: Any, labels: torch.Tensor, batch_size: int,
                 test_labels: torch.Tensor, num_classes: int = len(CLASSES)):
        self.folder, self.order_of, self.batch_size = folder, order, batch_size
        self.labels, self.test_labels, self.num_classes = labels, test_labels, num_classes
        self.buffer: torch.Tensor | None = None  # (training images, classes) float32 logits of this epoch
        self.order: torch.Tensor | None = None
        self.epoch: int | None = None  # 0-based, as the loop counts
        self.test_logits: torch.Tensor | None = None
        self.saved: dict[str, Any] = {}  # the partial epoch a checkpoint carried, until its epoch begins

    # -- files a run writes once
    def create(self, train_index: torch.Tensor, first_epoch: int, origin: str = "") -> None:
        """The index and labels of a new record, which starts at `first_epoch` (1-based)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, array in (("train_index", train_index.cpu().numpy().astype(np.int32)),
                            ("train_labels", self.labels.cpu().numpy().astype(np.uint8)),
                            ("test_labels", self.test_labels.cpu().numpy().astype(np.uint8))):
            buffer = io.BytesIO()
            np.save(buffer, array)
            atomic_write_bytes(self.folder / f"{name}.npy", buffer.getvalue())
        atomic_write_json(self.folder / "meta.json", {"version": VERSION, "first_epoch": first_epoch,
                                                      "origin": origin, "classes": self.num_classes})

    def cut_to(self, epochs_done: int) -> None:
        """Forget the epochs after `epochs_done` (a resume trains them again, as it does their metrics)."""
        for path in self.folder.glob("epoch-*.npz"):
            if _epoch_of(path) > epochs_done:
                path.unlink(missing_ok=True)

    # -- the loop's hooks
    def begin_epoch(self, epoch: int, start_batch: int) -> None:
        device = self.labels.device
        self.order, self.epoch, self.test_logits = self.order_of(epoch), epoch, None
        if self.saved.get("epoch") == epoch:
            self.buffer = self.saved["logits"].to(device)
        elif start_batch == 0:
            self.buffer = torch.full((len(self.labels), self.num_classes), float("nan"), device=device)
        else:  # resumed inside an epoch whose first batches went unrecorded: leave that epoch out
            self.buffer = None
        self.saved = {}

    def batch(self, i: int, logits: torch.Tensor) -> None:
        if self.buffer is not None:
            start = i * self.batch_size
            self.buffer.index_copy_(0, self.order[start : start + len(logits)], logits.detach().float())

    def test(self, logits: torch.Tensor) -> None:
        self.test_logits = logits

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the epoch under way (its buffer, on the host)."""
        if self.buffer is None or self.epoch is None:
            return {}
        return {"epoch": self.epoch, "logits": self.buffer.cpu()}

    def restore(self, state: dict[str, Any] | None) -> None:
        self.saved = dict(state or {})

    def end_epoch(self, epoch: int) -> None:
        """Write epoch `epoch` (1-based): one copy from the device, one atomic file."""
        if self.buffer is not None:
            train = derive_train(self.buffer, self.labels)
            parts = [train.flatten()]
            tested = self.test_logits is not None
            if tested:
                parts.append(derive_test(self.test_logits, self.test_labels).flatten())
            flat = torch.cat(parts).cpu().numpy()
            n = len(self.labels)
            arrays = train_arrays(flat[: 4 * n].reshape(n, 4))
            if tested:
                arrays.update(eval_arrays(flat[4 * n :].reshape(-1, 2)))
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            atomic_write_bytes(epoch_file(self.folder, epoch), buffer.getvalue())
        self.buffer = self.order = self.epoch = self.test_logits = None


def derive_train(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, 4) float32 on the device: true-class probability, correct (1/0, NaN: not trained on), the most
    probable other class, and its probability. `correct` is the loop's own rule: arg-max of the logits."""
    missing = logits[:, 0].isnan()
    probs = torch.softmax(logits, 1)
    p_true = probs.gather(1, labels[:, None])[:, 0]
    p_other, other = probs.scatter(1, labels[:, None], -1.0).max(1)
    correct = (logits.argmax(1) == labels).float().masked_fill(missing, float("nan"))
    return torch.stack([p_true, correct, other.float(), p_other], 1)


def derive_test(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(M, 2) float32: predicted class and true-class probability."""
    probs = torch.softmax(logits.float(), 1)
    return torch.stack([logits.argmax(1).float(), probs.gather(1, labels[:, None])[:, 0]], 1)


def train_arrays(rows: np.ndarray) -> dict[str, np.ndarray]:
    missing = np.isnan(rows[:, 1])
    return {
        "train_p_true": rows[:, 0].astype(np.float16),
        "train_correct": np.where(missing, MISSING, np.nan_to_num(rows[:, 1])).astype(np.uint8),
        "train_other": np.where(missing, MISSING, rows[:, 2]).astype(np.uint8),
        "train_p_other": rows[:, 3].astype(np.float16),
    }


def eval_arrays(rows: np.ndarray) -> dict[str, np.ndarray]:
    return {"test_pred": rows[:, 0].astype(np.uint8), "test_p_true": rows[:, 1].astype(np.float16)}


class NoRecords:
    """The recorder of a run that keeps no record (recording off, or nowhere to save it): every hook is a no-op."""

    def begin_epoch(self, epoch: int, start_batch: int) -> None: ...
    def batch(self, i: int, logits: torch.Tensor) -> None: ...
    def test(self, logits: torch.Tensor) -> None: ...
    def end_epoch(self, epoch: int) -> None: ...

    def state(self) -> dict[str, Any]:
        return {}


def start_recording(run: Any, config: Any, loader: Any, train_index: torch.Tensor, test_labels: torch.Tensor,
                    position: Any) -> Recorder | NoRecords:
    """The recorder of a training run: a new record for a new run or a fork (saying where it branched); for a
    resumed run, its record cut back to the checkpoint with the checkpoint's partial epoch (`position.records`).
    `NoRecords` for a run that is not saved or has recording off."""
    if run is None or not config.records:
        return NoRecords()
    folder = run.path / RECORDS_DIR
    recorder = Recorder(folder, loader.order, loader.labels, loader.batch_size, test_labels)
    if (folder / "meta.json").is_file():
        recorder.cut_to(position.epoch)
        recorder.restore(position.records)
        return recorder
    first = position.epoch + (2 if position.batch else 1)  # a partial epoch without its start is left out
    origin = ""
    parent = run.parent()
    if parent is not None and first == parent[1] + 1:
        origin = f"fork of run {parent[0]} at epoch {parent[1]} ({parent[2]} checkpoint)"
    elif position.epoch or position.batch:
        origin = "recording began when this run was resumed"
    recorder.create(train_index, first, origin)
    return recorder


# ---------------------------------------------------------------------------------------------------------
# Reading a record


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

    def data_mismatch(self, train_labels: np.ndarray, test_labels: np.ndarray) -> str | None:
        """Why a dataset with these labels is not the one this run trained on (None when it is), so that its
        images would not be the ones the record describes."""
        if len(self.train_index) and self.train_index.max() >= len(train_labels) or \
                len(self.test_labels) != len(test_labels):
            return "The data folder in the sidebar holds another dataset than this run trained on: its images cannot be shown."
        if not np.array_equal(train_labels[self.train_index], self.train_labels):
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


def has_records(run_path: Path) -> bool:
    return (Path(run_path) / RECORDS_DIR / "meta.json").is_file()


def records_signature(run_path: Path) -> tuple:
    """Changes when an epoch's record is written (a few stat calls): what a live view polls."""
    folder = Path(run_path) / RECORDS_DIR
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir() if p.suffix in (".npz", ".json")))
    except OSError:
        return ()


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
        epoch = _epoch_of(path)
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


# ---------------------------------------------------------------------------------------------------------
# The training images: data map, forgetting, lists


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
    most_predicted (the class predicted most often; ties: the later), looks_like (the other class given the
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
        "first_learned": first, "learned_at": since, "most_predicted": names[most], "looks_like": names[looks],
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


# ---------------------------------------------------------------------------------------------------------
# The test set over epochs


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
    """The confusion matrix at a tested epoch, in long form (as `evaluate.confusion_frame`)."""
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


# ---------------------------------------------------------------------------------------------------------
# The summary, for the CLI


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

    from cifar_app.runs import Run, RunStore

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
