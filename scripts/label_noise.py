"""Label errors on CIFAR-10N: how well the detectors find real human label errors, and what fixing them buys.

    python scripts/label_noise.py --data-dir .data-cache --cifar10n ../shared/datasets/cifar10n/CIFAR-10_human.pt

It works in a folder of its own (--work, default /tmp/label-noise: a data root whose images are links to the copy
in --data-dir, its label sets, and its runs), trains what is not there yet with the app's launcher (a process per
run, the `quick` preset unless --preset says otherwise), and prints:
  - detection on `aggre_label` and `random_label1`: for each detector (training dynamics, cleanlab's confident
    learning on K-fold out-of-sample probabilities, their combination) precision at 100/500/1000, the flagged
    list's size, precision and recall, and AUROC, against the images whose CIFAR-10N label differs from CIFAR-10's;
  - retraining with the same recipe: test accuracy on clean labels, on `aggre_label`, and on `aggre_label` with the
    combined detector's suggestions accepted without looking;
  - the detectors on the test set (no human relabelling to score against: counts and the top images).
A run finished before is used again (same recipe and labels), so a second call only prints. Never commit --work.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cifar_app.analysis.dynamics import load_records
from cifar_app.analysis.label_errors import (
    detection_metrics,
    flagged,
    format_metrics,
    load_results,
)
from cifar_app.analysis.label_search import find_label_errors, out_of_fold, train_table
from cifar_app.config import preset
from cifar_app.data.dataset import load_cifar10
from cifar_app.data.formats import CLASSES, resolve_root
from cifar_app.data.labels import LabelSetError, LabelStore, read_label_file
from cifar_app.engine.folds import ensure_run, fold_runs
from cifar_app.store.runs import Run, RunStore

SETS = {"c10n-aggre": "aggre_label", "c10n-random1": "random_label1"}


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def data_root(work: Path, data_dir: str) -> Path:
    """A data root of the script's own: links to the copy's files, so its label sets and cache stay in --work."""
    root = work / "data"
    root.mkdir(parents=True, exist_ok=True)
    for entry in resolve_root(data_dir).resolve().iterdir():
        if entry.name not in (".cache", "labels") and not (root / entry.name).exists():
            (root / entry.name).symlink_to(entry)
    return root


def import_sets(root: Path, cifar10n: Path, own: np.ndarray) -> dict[str, np.ndarray]:
    store, noisy = LabelStore(root), {}
    for name, key in SETS.items():
        labels = read_label_file(cifar10n, len(own), key=key)
        try:
            store.get(name)
        except LabelSetError:
            store.create(name, labels, own, f"{cifar10n.name}, key {key}")
        noisy[name] = labels
    return noisy


def test_accuracy(run: Run) -> float:
    return float(run.meta().get("final_test_acc") or float("nan"))


def detection(store: RunStore, run: Run, wrong: np.ndarray, folds: int, root: Path) -> list[str]:
    find_label_errors(run.id, str(store.root), str(root), folds, say)
    table = load_results(run.path)
    lines = format_metrics(detection_metrics(table, np.flatnonzero(wrong)))
    # cleanlab's other ranking, on the same out-of-fold probabilities
    config = run.config().replace(name=run.name, data_dir=str(root))
    spec = run.config_record()["labels"]
    runs = fold_runs(store, config, folds, f"{spec['name']}@{spec['version']}")
    held, _ = out_of_fold([runs[f] for f in sorted(runs)])
    margin = detection_metrics(train_table(load_records(run.path), held, "normalized_margin"), np.flatnonzero(wrong))
    lines += [line.replace("cleanlab  ", "cl-margin ").replace("combined  ", "comb-margn")
              for line in format_metrics(margin)[2:]]
    flags = flagged(table)
    right = (flags["suggested"].map(CLASSES.index).to_numpy() == clean_of(flags["index"].to_numpy()))
    lines.append(f"  the suggested class is CIFAR-10's label for {right[wrong[flags['index']]].mean():.1%} of the "
                 "flagged images whose label is wrong")
    return lines


CLEAN: np.ndarray | None = None


def clean_of(index: np.ndarray) -> np.ndarray:
    return CLEAN[index]


def main() -> int:
    global CLEAN
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".data-cache", help="the copy of CIFAR-10 (lossless: binary or python)")
    parser.add_argument("--cifar10n", default="../shared/datasets/cifar10n/CIFAR-10_human.pt")
    parser.add_argument("--work", default="/tmp/label-noise", help="the script's data root and runs (not committed)")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--folds", type=int, default=4)
    args = parser.parse_args()
    work = Path(args.work)
    root = data_root(work, args.data_dir)
    data = load_cifar10(root)
    CLEAN = data.train_labels.numpy()
    say(f"data: the {data.source}; runs in {work / 'runs'}")
    noisy = import_sets(root, Path(args.cifar10n), CLEAN)
    store = RunStore(work / "runs")
    base = preset(args.preset, data_dir=str(root))
    started = time.monotonic()
    aggre = ensure_run(store, base.replace(labels="c10n-aggre@0", name="aggre"), say)
    lines = ["", (f"detection on aggre_label ({int((noisy['c10n-aggre'] != CLEAN).sum()):,} wrong labels), "
             f"{args.folds} folds of {args.preset}:")]
    lines += detection(store, aggre, noisy["c10n-aggre"] != CLEAN, args.folds, root)
    clean = ensure_run(store, base.replace(name="clean"), say)
    curated_set = LabelStore(root).get("c10n-aggre")
    table = load_results(aggre.path)
    accepted = flagged(table)
    name = "c10n-aggre-curated"
    try:
        curated_set = LabelStore(root).get(name)
    except LabelSetError:
        curated_set = LabelStore(root).create(name, noisy["c10n-aggre"], CLEAN, "c10n-aggre + the search's suggestions")
        curated_set.edit([("train", int(i), CLASSES.index(s)) for i, s in zip(accepted["index"], accepted["suggested"])],
                         why="every suggestion of the combined detector, accepted without looking", action="accept")
    curated = ensure_run(store, base.replace(labels=f"{name}@1", name="curated"), say)
    fixed = curated_set.labels(1)
    lines += ["", f"retraining ({args.preset}, seed {base.seed}), test accuracy on CIFAR-10's test labels:",
              f"  clean labels            {test_accuracy(clean):6.2f}%",
              f"  aggre_label (noisy)     {test_accuracy(aggre):6.2f}%",
              (f"  aggre, curated          {test_accuracy(curated):6.2f}%   ({len(accepted):,} suggestions accepted; "
              f"wrong labels {int((noisy['c10n-aggre'] != CLEAN).sum()):,} -> {int((fixed != CLEAN).sum()):,})")]
    gap = test_accuracy(clean) - test_accuracy(aggre)
    if gap > 0:
        lines.append(f"  recovered {(test_accuracy(curated) - test_accuracy(aggre)) / gap:.0%} of what the noise cost")
    random1 = ensure_run(store, base.replace(labels="c10n-random1@0", name="random1"), say)
    lines += ["", f"detection on random_label1 ({int((noisy['c10n-random1'] != CLEAN).sum()):,} wrong labels):"]
    lines += detection(store, random1, noisy["c10n-random1"] != CLEAN, args.folds, root)
    test = load_results(clean.path, "test") if (clean.path / "label-errors").is_dir() else load_results(aggre.path, "test")
    lines += ["", "the test set (the aggre fold models' mean probabilities; no human relabelling to score against):"]
    counts = ", ".join(f"{d} {int(test[d + '_flag'].sum()):,}" for d in ("dynamics", "cleanlab", "combined"))
    lines += [f"  flagged: {counts}",
              "  top 10 (index label -> suggested): " + ", ".join(
                  f"{r['index']} {r['label']}->{r['suggested']}" for _, r in flagged(test).head(10).iterrows())]
    say(f"done in {time.monotonic() - started:,.0f} s")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
