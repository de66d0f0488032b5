"""Width: the seed recipe at several widths under the same data budget, each trained until it fits (issue 12).

    python scripts/width_study.py --data-dir DATA_ROOT [--widths 8 16 32] [--subset 5000] [--target 95]

The seed recipe (11 blocks, K=4, Adam 1e-3 with L2 5e-4, batch 256, no schedule, no augmentation) at each width
on the same --subset training images (the same ones, order and seed for every width), trained until its training
accuracy (the running accuracy over the epoch, as the coursework printed it) reaches --target, at most
--max-epochs. The seed recipe has no schedule, so stopping there is the run with that many epochs. Tested on
--test-size images of the test split (a fixed random choice; 0 = all 10,000). Prints, per width: parameters,
epochs, training accuracy, final and best test accuracy, and the train-test gap the coursework has to explain.

On one CPU thread (2026-11-28): width 8 about 590 training images/s, 16 about 220, 32 about 53.
Full size on a GPU: --widths 32 64 --subset 0 --test-size 0 --max-epochs 25 --device cuda --threads 8
"""

from __future__ import annotations

import argparse

from experiment import common_flags, run, setup, table, test_sample
from cifar_app.config import preset
from cifar_app.data.dataset import load_cifar10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="data root (the lossless copy)")
    parser.add_argument("--widths", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--subset", type=int, default=5000, help="training images (0 = all 50,000)")
    parser.add_argument("--target", type=float, default=95.0, help="stop once the training accuracy reaches this")
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--test-size", type=int, default=5000, help="test images evaluated each epoch (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    common_flags(parser)
    args = parser.parse_args()
    setup(args)

    data = load_cifar10(args.data_dir)
    if args.dry:
        args.widths, args.subset, args.test_size, args.max_epochs = [4, 8], 512, 500, 2
    data = test_sample(data, args.test_size)
    print(f"data: the {data.source}; {args.subset or 'all'} training images, {len(data.test_labels):,} test images",
          flush=True)

    rows = []
    for width in args.widths:
        config = preset("seed", width=width, epochs=args.max_epochs, train_subset=args.subset, seed=args.seed,
                        device=args.device, data_dir="unused")
        if args.dry:
            config = config.replace(blocks=3)
        out = run(f"width {width}", config, data, stop_at_train=args.target)
        reached = "" if out.train_acc >= args.target else f" (below {args.target:g}% at the cap)"
        rows.append([str(width), f"{out.params / 1e6:.2f} M", f"{out.epochs}{reached}", f"{out.train_acc:.2f}",
                     f"{out.final_test:.2f}", f"{out.best_test:.2f} (epoch {out.best_epoch})", f"{out.gap:.2f}",
                     f"{out.seconds:.0f}"])
        print(f"width {width}: train {out.train_acc:.2f}%, test {out.final_test:.2f}% after {out.epochs} epochs", flush=True)

    print(f"\nThe seed recipe (K=4, 11 blocks) on {args.subset or 'all 50,000'} training images, until training "
          f"accuracy >= {args.target:g}% (at most {args.max_epochs} epochs); seed {args.seed}; the {data.source}; "
          f"{len(data.test_labels):,} test images; device {args.device}, {args.threads} thread(s)"
          f"{'; DRY RUN (tiny)' if args.dry else ''}\n")
    print(table(["width", "parameters", "epochs", "train %", "final test %", "best test % (picked by test)",
                 "gap (train - final test)", "seconds"], rows))


if __name__ == "__main__":
    main()
