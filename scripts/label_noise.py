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

from cifar_app.analysis.dynamics import MISLABEL_MARGIN, image_table, load_records
from cifar_app.analysis.label_errors import (
    auroc,
    detection_metrics,
    flagged,
    format_metrics,
    load_results,
    suggestion_changes,
)
from cifar_app.analysis.label_search import find_label_errors, out_of_fold, train_table
from cifar_app.config import preset
from cifar_app.data.dataset import load_cifar10
from cifar_app.data.formats import CLASSES, resolve_root
from cifar_app.data.labels import EXCLUDED, LabelSetError, LabelStore, read_label_file
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


def partial_detection(store: RunStore, run: Run, wrong: np.ndarray, folds: int, root: Path) -> list[str]:
    """The detectors on the images held out by the fold runs finished so far (--no-train)."""
    config = run.config().replace(name=run.name, data_dir=str(root))
    spec = run.config_record()["labels"]
    runs = fold_runs(store, config, folds, f"{spec['name']}@{spec['version']}")
    if not runs:
        return ["  no fold run finished yet"]
    held, _ = out_of_fold([runs[f] for f in sorted(runs)])
    table = train_table(load_records(run.path), held)
    share = len(table) / len(wrong)
    lines = [(f"  on the {len(table):,} images held out by folds {', '.join(str(f + 1) for f in sorted(runs))} of {folds} "
             f"({int(wrong[table['index']].sum()):,} wrong); P@k at k times {share:.2f}:")]
    return lines + format_metrics(detection_metrics(table, np.flatnonzero(wrong), share))


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
    parser.add_argument("--folds", type=int, default=4, help="cross-validation folds on aggre_label")
    parser.add_argument("--random-folds", type=int, default=2, help="folds on random_label1 (0: leave it out)")
    parser.add_argument("--no-train", action="store_true", help="train nothing: measure with the runs finished so far")
    parser.add_argument("--epochs", type=int, default=0, help="the recipe's epochs (0: the preset's)")
    parser.add_argument("--augment", action="store_true", help="the recipe with random crops and flips")
    parser.add_argument("--detection-only", action="store_true", help="no retraining runs, no test-set table")
    args = parser.parse_args()
    work = Path(args.work)
    root = data_root(work, args.data_dir)
    data = load_cifar10(root)
    CLEAN = data.train_labels.numpy()
    say(f"data: the {data.source}; runs in {work / 'runs'}")
    noisy = import_sets(root, Path(args.cifar10n), CLEAN)
    store = RunStore(work / "runs")
    base = preset(args.preset, data_dir=str(root))
    base = base.replace(epochs=args.epochs or base.epochs, augment=args.augment or base.augment)
    started = time.monotonic()
    if args.no_train:
        return report_finished(store, base, root, noisy, args)
    aggre = ensure_run(store, base.replace(labels="c10n-aggre@0", name="aggre"), say)
    wrong = noisy["c10n-aggre"] != CLEAN
    lines = detection(store, aggre, wrong, args.folds, root)
    recipe = f"{args.preset}, {base.epochs} epochs" + (", augmented" if base.augment else "")
    show([f"detection on aggre_label ({int(wrong.sum()):,} wrong labels), {args.folds} folds of {recipe}:", *lines])
    if not args.detection_only:
        show(retraining(store, base, root, aggre, noisy["c10n-aggre"], args.preset))
        show(test_set(load_results(aggre.path, "test"), args.folds))
    if args.random_folds:
        random1 = ensure_run(store, base.replace(labels="c10n-random1@0", name="random1"), say)
        wrong = noisy["c10n-random1"] != CLEAN
        lines = detection(store, random1, wrong, args.random_folds, root)
        show([f"detection on random_label1 ({int(wrong.sum()):,} wrong labels), {args.random_folds} folds:", *lines])
    say(f"done in {time.monotonic() - started:,.0f} s")
    print("\n".join(SHOWN))
    return 0


def report_finished(store: RunStore, base, root: Path, noisy: dict[str, np.ndarray], args) -> int:
    """--no-train: what the runs finished so far measure (the noisy run's dynamics, the folds done)."""
    from cifar_app.engine.folds import finished_run

    aggre = finished_run(store, base.replace(labels="c10n-aggre@0"))
    if aggre is None:
        print("the run on aggre_label has not finished yet")
        return 1
    wrong = noisy["c10n-aggre"] != CLEAN
    show([f"detection on aggre_label ({int(wrong.sum()):,} wrong labels), finished folds of {args.folds}:",
          *partial_detection(store, aggre, wrong, args.folds, root), *dynamics_everywhere(aggre, wrong)])
    found = {name: finished_run(store, base.replace(labels=labels)) for name, labels in
             (("clean labels", ""), ("aggre_label (noisy)", "c10n-aggre@0"), ("aggre, curated", "c10n-aggre-curated@1"),
              ("aggre, top 1,000", "c10n-aggre-top1000@1"), ("aggre, flagged excluded", "c10n-aggre-excluded@1"))}
    show([f"retraining ({args.preset}, seed {base.seed}), final test accuracy on CIFAR-10's test labels:",
          *(f"  {name:<22}  " + (f"{test_accuracy(run):6.2f}%" if run else "not trained yet") for name, run in found.items())])
    return 0


def dynamics_everywhere(run: Run, wrong: np.ndarray) -> list[str]:
    """The dynamics detector needs no fold: on every training image."""
    table = image_table(load_records(run.path))
    score, truth = table["mislabel_score"].to_numpy(), wrong[table["index"].to_numpy()]
    order, flag = np.argsort(-score, kind="stable"), score >= MISLABEL_MARGIN
    return [(f"  dynamics on all {len(table):,} images: P@100 {truth[order[:100]].mean():.1%}, P@500 "
            f"{truth[order[:500]].mean():.1%}, P@1000 {truth[order[:1000]].mean():.1%}, flagged {int(flag.sum()):,} "
            f"(precision {truth[flag].mean():.1%}, recall {truth[flag].sum() / truth.sum():.1%}), AUROC "
            f"{auroc(score, truth):.3f}")]


SHOWN: list[str] = []


def show(lines: list[str]) -> None:
    """Print a table as soon as it is known, and again with the others at the end."""
    SHOWN.extend(["", *lines])
    print("\n".join(["", *lines]), flush=True)


def curated_set(root: Path, name: str, noisy: np.ndarray, changes: list, why: str):
    """The label set `name`: aggre_label with `changes` as its version 1 (made once)."""
    try:
        return LabelStore(root).get(name)
    except LabelSetError:
        made = LabelStore(root).create(name, noisy, CLEAN, f"c10n-aggre + {why}")
        made.edit(changes, why=why, action="accept")
        return made


def retraining(store: RunStore, base, root: Path, aggre: Run, noisy: np.ndarray, preset_name: str) -> list[str]:
    """Clean and noisy runs, and three ways to act on the combined detector's list: every suggestion accepted
    without looking, only the top 1,000 accepted, every flagged image excluded."""
    accepted = flagged(load_results(aggre.path))
    excluded = [("train", int(i), EXCLUDED) for i in accepted["index"]]
    ways = {"c10n-aggre-curated": ("every suggestion accepted", suggestion_changes(accepted, CLASSES)),
            "c10n-aggre-top1000": ("the top 1,000 suggestions accepted", suggestion_changes(accepted[:1000], CLASSES)),
            "c10n-aggre-excluded": ("every flagged image excluded", excluded)}
    runs = {name: ensure_run(store, base.replace(labels=f"{name}@1", name=name.removeprefix("c10n-aggre-")), say)
            for name, (why, changes) in ways.items() if curated_set(root, name, noisy, changes, why)}
    clean = ensure_run(store, base.replace(name="clean"), say)  # after the curated runs: those matter more
    lines = [f"retraining ({preset_name}, seed {base.seed}), final test accuracy on CIFAR-10's test labels:",
             f"  clean labels                              {test_accuracy(clean):6.2f}%",
             f"  aggre_label (noisy)                       {test_accuracy(aggre):6.2f}%   "
             f"(wrong labels {int((noisy != CLEAN).sum()):,})"]
    gap = test_accuracy(clean) - test_accuracy(aggre)
    for name, (why, changes) in ways.items():
        fixed, run = LabelStore(root).get(name).labels(1), runs[name]
        kept = fixed != EXCLUDED
        gain = (test_accuracy(run) - test_accuracy(aggre)) / gap if gap > 0 else float("nan")
        recovered = f"; recovered {gain:.0%} of the cost" if gap > 0 else ""
        lines.append(f"  aggre, {why:<35}{test_accuracy(run):6.2f}%   ({len(changes):,} edits; wrong labels among "
                     f"the {int(kept.sum()):,} kept {int(((fixed != CLEAN) & kept).sum()):,}{recovered})")
    return lines


def test_set(test, folds: int) -> list[str]:
    counts = ", ".join(f"{d} {int(test[d + '_flag'].sum()):,}" for d in ("dynamics", "cleanlab", "combined"))
    return [f"the test set ({folds} aggre fold models' mean probabilities; no human relabelling to score against):",
            f"  flagged: {counts}",
            "  top 10 (index label -> suggested): " + ", ".join(
                f"{r['index']} {r['label']}->{r['suggested']}" for _, r in flagged(test).head(10).iterrows())]


if __name__ == "__main__":
    raise SystemExit(main())
