"""CIFAR-10 batches on the training device: the split into training and validation images, normalisation,
and `TensorLoader`, whose uint8 images live on the device and whose batches are cropped, flipped, masked and
normalised with a few tensor ops on the whole batch (the airbench way). `torchvision_loader` keeps the
coursework's per-image PIL pipeline as the baseline the benchmark measures.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator

import torch
from PIL import Image

from cifar_app.data.dataset import Cifar10
from cifar_app.data.formats import CLASSES, MEAN, STD


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


FOLD_SEED = 20_240_601  # one partition into folds for every seed: K runs of any seeds together cover every image once


def fold_indices(n: int, folds: int, fold: int, subset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, held-out) indices for fold `fold` of `folds`: a fixed random partition of the `n` images into
    folds of (almost) equal size, the same whatever the run's seed, so that the K runs of a cross-validation hold out
    every image exactly once; `subset` keeps the first images of the training part (0 = all)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(FOLD_SEED))
    parts = torch.tensor_split(order, folds)
    held = parts[fold]
    train_idx = torch.cat([part for i, part in enumerate(parts) if i != fold])
    return (train_idx[:subset] if subset else train_idx), held


def run_split(n: int, val_size: int, seed: int, subset: int = 0, folds: int = 0, fold: int = 0,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (training, validation) indices a run uses: a cross-validation fold held out when `folds`, else a seeded
    validation split; images where `keep` (a boolean per image) is False are in neither (a label set's excluded
    images)."""
    train_idx, val_idx = fold_indices(n, folds, fold, subset) if folds else split_indices(n, val_size, seed, subset)
    if keep is not None:
        train_idx, val_idx = train_idx[keep[train_idx]], val_idx[keep[val_idx]]
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
