"""JPEG vs lossless: the same recipe and seeds on the JPEG copy and on the original images (issue 12).

    python scripts/jpeg_vs_lossless.py --lossless DATA_ROOT --jpeg DATA_ROOT [--recipes narrow quick] [--seeds 0 1]

Both copies hold the same 60,000 images: the JPEG copy's train|test/<class>/NNNN.jpg is the NNNN-th image of that
class in the original order. The JPEG copy is first put into the original order (the PSNR of the pairs is printed
as a check), so that a seed draws the same training subset, batch order and initial weights on both copies and
two runs of a pair differ only in the pixels (training and test images alike: each copy is tested on its own
test split, as a user of that copy would be). Prints a row per run, then per recipe each copy's mean and the
paired difference, lossless minus JPEG, with its spread.

Recipes: `narrow`, the seed recipe (Adam 1e-3, no augmentation, batch 256) at --width 8 --k 2 for
--narrow-epochs on --narrow-subset training images; `quick`, the quick preset (3 epochs, all 50,000 images,
unless --quick-subset); `seed`, the coursework's recipe at full size (for a GPU).
On one CPU thread (2026-11-28): narrow (20,000 images, 8 epochs) about 5 min a run, quick about 4 min.
Full size on a GPU: --recipes seed quick --narrow-subset 0 --device cuda --threads 8
"""

from __future__ import annotations

import argparse

import torch

from experiment import Outcome, common_flags, mean_spread, run, setup, table, test_sample
from cifar_app.config import TrainConfig, preset
from cifar_app.data.dataset import Cifar10, load_cifar10


def in_original_order(jpeg: Cifar10, original: Cifar10) -> Cifar10:
    """The JPEG copy (class by class, each in the original order) rearranged into the original order."""

    def order(jpeg_labels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not bool((jpeg_labels[1:] >= jpeg_labels[:-1]).all()):
            raise SystemExit("the JPEG copy is not listed class by class: cannot pair its images with the originals")
        first = torch.searchsorted(jpeg_labels, torch.arange(10))
        rank = torch.empty_like(labels)
        for c in range(10):
            where = (labels == c).nonzero().flatten()
            rank[where] = torch.arange(len(where))
        index = first[labels] + rank
        if not torch.equal(jpeg_labels[index], labels):
            raise SystemExit("the two copies have different numbers of images per class: they cannot be paired")
        return index

    train = order(jpeg.train_labels, original.train_labels)
    test = order(jpeg.test_labels, original.test_labels)
    return Cifar10(jpeg.train_images[train], original.train_labels, jpeg.test_images[test], original.test_labels,
                   jpeg.source)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB between two uint8 batches."""
    mse = torch.cat([(x.float() - y.float()).pow(2).flatten(1).mean(1) for x, y in zip(a.split(5000), b.split(5000))])
    return 10 * torch.log10(255**2 / mse.clamp_min(1e-10))


def recipes(args: argparse.Namespace) -> dict[str, TrainConfig]:
    narrow = preset("seed", width=8, k=2, epochs=args.narrow_epochs, train_subset=args.narrow_subset)
    quick = preset("quick", train_subset=args.quick_subset)
    if args.dry:
        narrow = narrow.replace(epochs=1, train_subset=512, blocks=3)
        quick = quick.replace(epochs=1, train_subset=512, blocks=3)
    everything = {"narrow": narrow, "quick": quick, "seed": preset("seed")}
    return {name: everything[name].replace(device=args.device, data_dir="unused") for name in args.recipes}


def summary(name: str, pairs: list[tuple[Outcome, Outcome]]) -> list[list[str]]:
    def col(which: int, field: str) -> list[float]:
        return [getattr(pair[which], field) for pair in pairs]

    rows = []
    for field, what in (("final_test", "final test"), ("best_test", "best test (picked by test)"), ("train_acc", "final train")):
        lossless, jpeg = col(0, field), col(1, field)
        rows.append([name, what, mean_spread(lossless), mean_spread(jpeg),
                     mean_spread([a - b for a, b in zip(lossless, jpeg)], signed=True)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lossless", required=True, help="data root of a lossless copy (binary release or python batches)")
    parser.add_argument("--jpeg", required=True, help="data root of the JPEG copy (image folder)")
    parser.add_argument("--recipes", nargs="+", default=["narrow", "quick"], choices=("narrow", "quick", "seed"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--narrow-epochs", type=int, default=8)
    parser.add_argument("--narrow-subset", type=int, default=20_000, help="training images for narrow (0 = all)")
    parser.add_argument("--quick-subset", type=int, default=0, help="training images for quick (0 = all)")
    common_flags(parser)
    args = parser.parse_args()
    setup(args)

    original = load_cifar10(args.lossless)
    jpeg = load_cifar10(args.jpeg)
    if "lossless" not in original.source or "JPEG" not in jpeg.source:
        raise SystemExit(f"expected a lossless and a JPEG copy; got the {original.source} and the {jpeg.source}")
    jpeg = in_original_order(jpeg, original)
    quality = psnr(torch.cat([jpeg.train_images, jpeg.test_images]), torch.cat([original.train_images, original.test_images]))
    print(f"lossless: the {original.source}\nJPEG:     the {jpeg.source}\npaired image by image: PSNR of the JPEG copy "
          f"{quality.mean():.1f} dB on average, lowest {quality.min():.1f} dB", flush=True)
    if args.dry:
        original, jpeg = test_sample(original, 500), test_sample(jpeg, 500)

    rows, pairs = [], {}
    for name, config in recipes(args).items():
        for seed in args.seeds:
            pair = tuple(run(f"{name} seed {seed} {copy}", config.replace(seed=seed), data)
                         for copy, data in (("lossless", original), ("JPEG", jpeg)))
            pairs.setdefault(name, []).append(pair)
            a, b = pair
            rows.append([name, str(seed), f"{a.final_test:.2f} ({a.best_test:.2f})", f"{b.final_test:.2f} ({b.best_test:.2f})",
                         f"{a.final_test - b.final_test:+.2f}", f"{a.train_acc:.2f} / {b.train_acc:.2f}",
                         f"{a.seconds:.0f} / {b.seconds:.0f}"])
            print(f"{name} seed {seed}: lossless {a.final_test:.2f}%, JPEG {b.final_test:.2f}%", flush=True)

    print("\nPer run: final test accuracy % (best epoch's, picked by test) on each copy's own test split\n")
    print(table(["recipe", "seed", "lossless", "JPEG", "lossless - JPEG (final)", "final train % (lossless / JPEG)",
                 "seconds"], rows))
    print("\nPer recipe: mean ± standard deviation over seeds (min to max)\n")
    print(table(["recipe", "accuracy %", "lossless", "JPEG", "lossless - JPEG, paired by seed"],
                [row for name, pair_list in pairs.items() for row in summary(name, pair_list)]))
    settings = {name: {k: v for k, v in c.to_dict().items() if k in ("width", "k", "epochs", "train_subset", "batch_size")}
                for name, c in recipes(args).items()}
    print(f"\nsettings: {settings}; seeds {args.seeds}; device {args.device}, {args.threads} thread(s)"
          f"{'; DRY RUN (tiny)' if args.dry else ''}")


if __name__ == "__main__":
    main()
