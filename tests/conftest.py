"""Shared fixtures: tiny CIFAR-like data the tests make themselves, in every on-disk format the loader reads."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cifar_app.config import TrainConfig  # noqa: E402
from cifar_app.data.dataset import Cifar10
from cifar_app.data.formats import CLASSES

OFFLINE_ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"

# The tests' networks are tiny: a second thread gains them nothing, and on a loaded 2-core machine torch's
# threads spin against each other and against the app processes the browser tests start.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the same for the CLI processes the tests start


def make_images(per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 32x32 images: each class a colour and a stripe position, plus noise. (N, 32, 32, 3) uint8."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    palette = np.random.default_rng(1234).integers(30, 226, size=(10, 3))  # the same classes in every split
    images = rng.integers(0, 60, size=(len(labels), 32, 32, 3)) + palette[labels][:, None, None, :] // 2
    for i, label in enumerate(labels):
        images[i, 3 * label : 3 * label + 3, :, :] = 255 - palette[label] // 3
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_batches(root: Path, train_per_class: int = 20, test_per_class: int = 10) -> Path:
    """The original python-batch layout (cifar-10-batches-py/data_batch_1..5, test_batch)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = make_images(train_per_class, seed=1)
    test_x, test_y = make_images(test_per_class, seed=2)
    for i, part in enumerate(np.array_split(np.arange(len(train_y)), 5), start=1):
        data = train_x[part].transpose(0, 3, 1, 2).reshape(len(part), -1)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": data, b"labels": train_y[part].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": test_x.transpose(0, 3, 1, 2).reshape(len(test_y), -1), b"labels": test_y.tolist()}, f)
    return folder


def write_folder(root: Path, suffix: str = ".png", train_per_class: int = 20, test_per_class: int = 10) -> Path:
    """The image-folder layout (train/<class>/*.png|jpg, test/<class>/...)."""
    for split, per_class, seed in (("train", train_per_class, 1), ("test", test_per_class, 2)):
        images, labels = make_images(per_class, seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}{suffix}", quality=95)
    return root


def tiny_cifar(train_per_class: int = 20, test_per_class: int = 10) -> Cifar10:
    def tensors(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = make_images(per_class, seed)
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)

    return Cifar10(*tensors(train_per_class, 1), *tensors(test_per_class, 2), source="tiny test data")


@pytest.fixture
def tiny_data() -> Cifar10:
    return tiny_cifar()


def tiny_config(**changes) -> TrainConfig:
    """A network small enough to train a few epochs on the CPU in seconds."""
    base = dict(blocks=3, width=8, k=2, epochs=2, batch_size=32, device="cpu", lr=3e-3, data_dir="unused")
    return TrainConfig(**{**base, **changes})


def binary_files(train_per_class: int = 20, test_per_class: int = 10) -> dict[str, bytes]:
    """The binary release's files for the same images as `write_batches`: records of a label byte, then the
    red, green and blue planes (row-major)."""
    train_x, train_y = make_images(train_per_class, seed=1)
    test_x, test_y = make_images(test_per_class, seed=2)
    parts = np.array_split(np.arange(len(train_y)), 5)
    splits = [(f"data_batch_{i}.bin", train_x[p], train_y[p]) for i, p in enumerate(parts, start=1)]
    files = {}
    for name, images, labels in [*splits, ("test_batch.bin", test_x, test_y)]:
        planes = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)
        files[name] = np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1).tobytes()
    return files


def write_binary(root: Path, train_per_class: int = 20, test_per_class: int = 10) -> Path:
    """The original binary layout (cifar-10-batches-bin/data_batch_1..5.bin, test_batch.bin, batches.meta.txt).
    Its sizes and md5s are its own, not the published ones: `tiny_binary_release` makes the loader accept them."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, content in binary_files(train_per_class, test_per_class).items():
        (folder / name).write_bytes(content)
    (folder / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n")
    return folder


@pytest.fixture
def tiny_binary_release(monkeypatch) -> dict[str, tuple[int, str]]:
    """The loader's table of the binary release (records and md5 per file) replaced by `write_binary`'s."""
    import hashlib

    from cifar_app.data import formats

    release = {name: (len(content) // formats.BINARY_RECORD, hashlib.md5(content).hexdigest())
               for name, content in binary_files().items()}
    monkeypatch.setattr(formats, "BINARY_RELEASE", release)
    return release


@pytest.fixture
def trained_run(tmp_path):
    """A finished tiny run (3 epochs, flip TTA) in a run store of the test's own: a copy of the one run trained
    once per test session (explore_helpers.trained_runs_dir), so a test may rename, delete or export it."""
    import shutil

    from cifar_app.store.runs import RunStore
    from explore_helpers import trained_runs_dir

    shutil.copytree(trained_runs_dir(), tmp_path / "runs")
    (run,) = RunStore(tmp_path / "runs").runs()
    return run
