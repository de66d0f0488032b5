"""The offline copy of the 60,000 real images, read the way a user would (skipped when absent)."""

import tarfile

import pytest

from cifar_app.data import CLASSES, class_counts, load_cifar10
from conftest import OFFLINE_ARCHIVE

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="session")
def real_root(tmp_path_factory):
    if not OFFLINE_ARCHIVE.is_file():
        pytest.skip(f"the offline copy {OFFLINE_ARCHIVE} is not on this machine")
    root = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(OFFLINE_ARCHIVE) as tar:
        tar.extractall(root, filter="data")
    return root


def test_the_offline_copy_has_50000_and_10000_balanced_images(real_root):
    data = load_cifar10(real_root)
    assert "image folder" in data.source
    assert data.train_images.shape == (50_000, 3, 32, 32)
    assert data.test_images.shape == (10_000, 3, 32, 32)
    assert class_counts(data.train_labels) == [5_000] * 10
    assert class_counts(data.test_labels) == [1_000] * 10
    assert data.classes == CLASSES
    # real photographs, not blank files: every class has varied pixels
    assert data.train_images.float().std() > 40
