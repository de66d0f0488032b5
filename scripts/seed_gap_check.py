"""Where does the seed preset lose test accuracy? One diagnostic for a trained run (issue 7's open question).

    python scripts/seed_gap_check.py RUNS_DIR RUN_NAME_OR_ID [--data-dir data] [--which last]

Prints, for the run's checkpoint: test accuracy in eval mode (what the training loop reports); with BatchNorm
using each (shuffled) test batch's own statistics; after re-estimating BatchNorm's running statistics on
10,000 training images; accuracy on 10,000 training images in eval mode (the generalisation gap); and, per
block, how saturated the attention is (mean of max_k a_k, share of images whose max a_k > 0.99, and how
often each kernel is the one picked). If re-estimated statistics gain little, the gap is not BatchNorm's.
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from cifar_app.store.checkpoints import load_run_model
from cifar_app.data.dataset import load_cifar10
from cifar_app.data.loader import normalize
from cifar_app.device import pick_device
from cifar_app.store.runs import RunStore

SAMPLE = 10_000
BATCH = 500


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    right = 0
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            x = normalize(images[start : start + BATCH].to(device))
            right += (model(x).argmax(1).cpu() == labels[start : start + BATCH]).sum().item()
    return 100 * right / len(images)


def show(label: str, percent: float) -> None:
    print(f"{label:<60} {percent:6.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir")
    parser.add_argument("run", help="the run's name or id")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--which", default="last", choices=("last", "best"))
    args = parser.parse_args()
    runs = [r for r in RunStore(args.runs_dir).runs() if args.run in (r.id, r.name)]
    if not runs:
        raise SystemExit(f"no run named {args.run!r} in {args.runs_dir}")
    device = pick_device("auto")
    model = load_run_model(runs[0], args.which, device).model.float().eval()
    data = load_cifar10(args.data_dir)
    gen = torch.Generator().manual_seed(0)
    test = torch.randperm(len(data.test_images), generator=gen)[:SAMPLE]  # the folder layout is sorted by class
    train = torch.randperm(len(data.train_images), generator=gen)[:SAMPLE]
    test_x, test_y = data.test_images[test], data.test_labels[test]
    train_x, train_y = data.train_images[train], data.train_labels[train]
    print(f"run {runs[0].name} ({args.which} checkpoint) on {device}")
    show("test accuracy, eval mode (running statistics)", accuracy(model, test_x, test_y, device))
    show("training images, eval mode", accuracy(model, train_x, train_y, device))

    per_batch = copy.deepcopy(model).train()
    for module in per_batch.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.track_running_stats, module.running_mean, module.running_var = False, None, None
    show(f"test accuracy, BN on each batch's statistics ({BATCH})", accuracy(per_batch, test_x, test_y, device))

    recalibrated = copy.deepcopy(model)
    for module in recalibrated.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    recalibrated.train()
    with torch.no_grad():
        for start in range(0, SAMPLE, BATCH):
            recalibrated(normalize(train_x[start : start + BATCH].to(device)))
    recalibrated.eval()
    show(f"test accuracy, BN re-estimated on {SAMPLE:,} training images", accuracy(recalibrated, test_x, test_y, device))

    with torch.no_grad():
        _, attention = model.forward_with_attention(normalize(test_x[:1000].to(device)))
    print("attention on 1,000 test images, per block: mean max a_k | share with max a_k > 0.99 | times each kernel won")
    for i, a in enumerate(attention, 1):
        top = a.float().max(1)
        wins = torch.bincount(top.indices, minlength=a.shape[1]).tolist()
        print(f"  block {i:2d}: {top.values.mean():.3f} | {(top.values > 0.99).float().mean():.2f} | {wins}")


if __name__ == "__main__":
    main()
