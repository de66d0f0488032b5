"""CIFAR-10 in memory: `Cifar10` (uint8 tensors), loaded from a copy on disk through a cache of the decoded
tensors next to the data (the next start takes about a second), or downloaded with torchvision's URL and md5.
`python -m cifar_app.data` checks, downloads or caches it from a terminal.
"""

from __future__ import annotations

import functools
import logging
import os
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cifar_app.atomic import atomic_torch_save
from cifar_app.data.formats import (
    BATCHES_DIR, CLASSES, DataFormatError, DataNotFound, Found, data_fingerprint, fingerprint, locate, read_copy,
    resolve_root,
)

log = logging.getLogger(__name__)


@dataclass
class Cifar10:
    """All of CIFAR-10 as uint8 NCHW tensors and int64 labels, with where it came from."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str
    classes: tuple[str, ...] = CLASSES

    @functools.cached_property
    def fingerprint(self) -> str:
        """Which images and labels these are (formats.data_fingerprint): once per loaded copy."""
        return data_fingerprint(*(t.numpy() for t in (self.train_images, self.train_labels, self.test_images,
                                                      self.test_labels)))

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "train":
            return self.train_images, self.train_labels
        if name == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"unknown split {name!r}; use 'train' or 'test'")


def cache_path(root: Path, found: Found) -> Path:
    return root / ".cache" / f"cifar10-{found.kind}-{fingerprint(found)}.pt"


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
    arrays, source = read_copy(found)
    data = Cifar10(*(torch.from_numpy(a) for a in arrays), source=source)
    try:
        atomic_torch_save(
            {"train_x": data.train_images, "train_y": data.train_labels, "test_x": data.test_images,
             "test_y": data.test_labels, "source": data.source},
            cache,
        )
    except OSError as error:  # a read-only copy still works, just without the cache
        log.warning("could not write the cache %s (%s)", cache, error)
    return data


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
