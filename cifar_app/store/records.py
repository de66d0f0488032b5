"""The per-image record's files in a run folder: their names and format, and cheap checks on them. No torch.

    dynamics/
      meta.json         format version, the first recorded epoch, and where a fork's record begins
      train_index.npy   int32: each recorded training image's index in CIFAR-10's training set (through the
                        validation split and a training subset); entry i of every train array is this image
      train_labels.npy  uint8, and test_labels.npy (test images keep their own order: index = position)
      epoch-0001.npz    train_p_true f16, train_correct u8 (255: not trained on this epoch; training drops the
                        last partial batch), train_other u8 (the most probable class other than the label),
                        train_p_other f16; test_pred u8 and test_p_true f16 when the epoch was tested
Each epoch's file is written once, atomically (a resumed run rewrites it with the same bytes), so a reader sees
whole epochs while the run trains. The engine's recorder writes these files, the dynamics analysis reads them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from cifar_app.atomic import atomic_write_bytes

RECORDS_DIR = "dynamics"


VERSION = 1


MISSING = 255  # train_correct / train_other of an image the epoch did not train on


def epoch_file(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch:04d}.npz"


def epoch_of(path: Path) -> int:
    return int(path.stem.split("-")[1])


def has_records(run_path: Path) -> bool:
    return (Path(run_path) / RECORDS_DIR / "meta.json").is_file()


def records_signature(run_path: Path) -> tuple:
    """Changes when an epoch's record is written (a few stat calls): what a live view polls."""
    folder = Path(run_path) / RECORDS_DIR
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir() if p.suffix in (".npz", ".json")))
    except OSError:
        return ()


# The last epoch's class probabilities of the images a run did not train on, beside its record: the held-out images
# (a validation split, or the fold a cross-validation run holds out: out-of-sample probabilities for label-error
# search) and the test set. float16 (N, classes), with the held-out images' indices in CIFAR-10's training set.
PREDICTIONS_FILE = "predictions.npz"


def save_predictions(run_path: Path, epoch: int, heldout_index: np.ndarray, heldout_probs: np.ndarray,
                     test_probs: np.ndarray) -> None:
    (Path(run_path) / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, epoch=np.int64(epoch), heldout_index=heldout_index.astype(np.int32),
             heldout_probs=heldout_probs.astype(np.float16), test_probs=test_probs.astype(np.float16))
    atomic_write_bytes(Path(run_path) / RECORDS_DIR / PREDICTIONS_FILE, buffer.getvalue())


def load_predictions(run_path: Path) -> dict[str, np.ndarray] | None:
    """{'epoch', 'heldout_index', 'heldout_probs' (float32), 'test_probs' (float32)}, or None when the run has none."""
    try:
        with np.load(Path(run_path) / RECORDS_DIR / PREDICTIONS_FILE) as saved:
            arrays = {key: saved[key] for key in saved.files}
    except (OSError, ValueError, EOFError):
        return None
    return {key: value.astype(np.float32) if key.endswith("probs") else value for key, value in arrays.items()}
