"""Label files a person hands in, read into one label per training image: a CSV of `index,label` (a label is a
number or a class name), a numpy array (.npy), or CIFAR-10N's file (a .pt dict of arrays) with the key to use.
Anything that does not fit (another length, a class out of range, a file that is not labels) is refused with a
sentence. numpy only, except for reading a .pt file (torch, without running any code it holds).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from cifar_app.data.formats import CLASSES

EXCLUDED = -1  # a label that leaves its image out of training


class LabelSetError(ValueError):
    """A label file or label set that cannot be used; the message says why in a sentence."""



def read_label_file(path: Path, n: int, key: str | None = None, classes: tuple[str, ...] = CLASSES) -> np.ndarray:
    """The labels in a CSV (index,label), .npy or CIFAR-10N .pt file, checked against `n` training images and the
    classes; LabelSetError with a sentence otherwise."""
    path = Path(path)
    if not path.is_file():
        raise LabelSetError(f"{path} is not a file.")
    suffix = path.suffix.lower()
    if key is not None and suffix not in (".pt", ".pth"):
        raise LabelSetError(f"--key picks an array in a .pt file of several; {path.name} is a {suffix or 'plain'} file.")
    try:
        if suffix == ".csv":
            labels = _read_csv(path, n, classes)
        elif suffix == ".npy":
            labels = np.load(path, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            labels = _read_pt(path, key)
        else:
            raise LabelSetError(f"{path.name}: a label set is a .csv (index,label), a .npy array or a .pt file with "
                                "--key (CIFAR-10N's).")
    except LabelSetError:
        raise
    except Exception as error:  # truncated, not numpy, not a pickle: many kinds
        raise LabelSetError(f"{path.name} cannot be read as labels ({type(error).__name__}: {error}).") from error
    return check_labels(labels, n, path.name, classes)


def check_labels(labels: Any, n: int, what: str, classes: tuple[str, ...] = CLASSES) -> np.ndarray:
    """`labels` as int16, or LabelSetError: one label per training image, each a class number (or EXCLUDED)."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise LabelSetError(f"{what} holds an array of shape {array.shape}; a label set is one label per image.")
    if array.dtype.kind not in "iu" and not (array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0)):
        raise LabelSetError(f"{what} holds {array.dtype} values; labels are class numbers 0 to {len(classes) - 1}.")
    if len(array) != n:
        raise LabelSetError(f"{what} has {len(array):,} labels but the training set has {n:,} images: it was made for "
                            "another dataset (or a subset of this one).")
    bad = (array < EXCLUDED) | (array >= len(classes))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise LabelSetError(f"{what} has {int(bad.sum()):,} labels outside the {len(classes)} classes (0 to "
                            f"{len(classes) - 1}), the first at image {first}: {array[first]}.")
    return array.astype(np.int16)


def _read_csv(path: Path, n: int, classes: tuple[str, ...]) -> np.ndarray:
    rows = [row for row in csv.reader(io.StringIO(path.read_text(errors="strict"))) if row and any(c.strip() for c in row)]
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # a header
    labels = np.full(n, -2, dtype=np.int64)
    names = {name: i for i, name in enumerate(classes)}
    for line, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise LabelSetError(f"{path.name}, row {line}: write index,label (got {','.join(row)!r}).")
        index, label = row[0].strip(), row[1].strip()
        if not index.isdigit() or int(index) >= n:
            raise LabelSetError(f"{path.name}, row {line}: {index!r} is not an image index from 0 to {n - 1:,}.")
        value = names.get(label.lower(), None)
        if value is None:
            if not label.lstrip("-").isdigit():
                raise LabelSetError(f"{path.name}, row {line}: {label!r} is neither a class number nor one of "
                                    f"{', '.join(classes)}.")
            value = int(label)
        if labels[int(index)] != -2:
            raise LabelSetError(f"{path.name} names image {index} twice (row {line}).")
        labels[int(index)] = value
    missing = int((labels == -2).sum())
    if missing:
        raise LabelSetError(f"{path.name} labels {n - missing:,} of the {n:,} training images; a label set names "
                            "every image once (import the full set, then edit it).")
    return labels


def _read_pt(path: Path, key: str | None) -> np.ndarray:
    """One array of a dict saved with torch (CIFAR-10N's file), loaded without running any code it holds."""
    import torch
    from numpy._core.multiarray import _reconstruct

    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"), _reconstruct, np.ndarray, np.dtype,
               *(type(np.dtype(kind)) for kind in ("int64", "int32", "int16", "uint8", "float32", "float64"))]
    try:
        with torch.serialization.safe_globals(allowed):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, or holding code: refused without running it
        raise LabelSetError(f"{path.name} cannot be read as a saved dict of label arrays ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200]}).") from error
    if not isinstance(saved, dict):
        return saved.numpy() if isinstance(saved, torch.Tensor) else np.asarray(saved)
    if key is None or key not in saved:
        keys = ", ".join(str(k) for k in saved)
        raise LabelSetError(f"{path.name} holds several label arrays ({keys}): pick one with --key"
                            + (f" ({key!r} is not one of them)." if key is not None else "."))
    value = saved[key]
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
