"""The per-image record, written by the training loop as it trains (store/records.py says what is on disk).

Each training step already computes its batch's logits; the recorder copies them, on the device, into one
(training images, classes) buffer at the batch's places in the epoch's shuffled order (one `index_copy_` per
batch: no host sync, no extra pass over the data). At the epoch's end the buffer becomes four compact arrays,
the test set's logits from the evaluation that already ran become two, and all of it is copied to the host
once and written as one file. The partial epoch's buffer is part of every checkpoint, so a resume (after a
stop, a kill or a stop during evaluation) continues the record exactly as the uninterrupted run would have
written it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifar_app.atomic import atomic_write_bytes, atomic_write_json
from cifar_app.data.formats import CLASSES
from cifar_app.store.records import MISSING, RECORDS_DIR, VERSION, epoch_of, epoch_file


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
            if epoch_of(path) > epochs_done:
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
    if parent is not None and run.config_record().get("parent_data") == "other":
        origin = f"a fork of run {parent[0]} on other data than its parent's: its record begins afresh here"
    elif parent is not None and first == parent[1] + 1:
        origin = f"fork of run {parent[0]} at epoch {parent[1]} ({parent[2]} checkpoint)"
    elif position.epoch or position.batch:
        origin = "recording began when this run was resumed"
    recorder.create(train_index, first, origin)
    return recorder
