"""A table of the runs in a run store: one row per run with its honest figures.

`python -m cifar_app.report [RUNS_DIR]` prints it as Markdown (the README's ablation table comes from here).
"""

from __future__ import annotations

import argparse
from typing import Any

from cifar_app.config import TrainConfig, matching_preset
from cifar_app.store.runs import Run, RunStore
from cifar_app.events import best_epoch, final_epoch, records_from_rows, selection


def labels_text(record: dict[str, Any] | None, config: TrainConfig) -> str:
    """The labels a run trained on, as the Runs page shows them: 'own', or the label set's NAME@VERSION; a
    cross-validation run adds its held-out fold."""
    text = f"{record['name']}@{record['version']}" if record else "own"
    return text + (f" (fold {config.fold + 1} of {config.folds} held out)" if config.folds else "")


def run_row(run: Run) -> dict[str, Any]:
    """Name, status, key hyperparameters and figures of one run; accuracies in percent, None when unknown."""
    config, record, meta, rows = run.config(), run.config_record(), run.meta(), run.metrics()
    history = records_from_rows(rows, config.epochs)
    best, final = best_epoch(history), final_epoch(history)
    origin = run.parent()
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status(),
        "preset": matching_preset(config) or "custom",
        "labels": labels_text(record.get("labels"), config),
        "epochs": f"{rows[-1]['epoch'] if rows else (origin[1] if origin else 0)}/{config.epochs}",
        "best_by": selection(history),
        "best_epoch": best.epoch if best else None,
        "best_val_acc": best.val_acc if best else None,
        "best_test_acc": best.test_acc if best else None,
        "final_test_acc": final.test_acc if final else None,
        "final_train_acc": rows[-1]["train_acc"] if rows else None,
        # a killed process never wrote its time to meta: the epochs' own seconds count what it trained
        "seconds": max(meta.get("seconds") or 0, sum(r["seconds"] or 0 for r in rows)),
        "device": record.get("device", ""),
        "width": config.width,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "schedule": config.schedule,
        "started": meta.get("started"),
        "reason": meta.get("reason", ""),
        "parent": origin[0] if origin else "",
        "parent_epoch": origin[1] if origin else None,
    }


def runs_table(store: RunStore) -> list[dict[str, Any]]:
    return [run_row(run) for run in store.runs()]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| run | best epoch (by) | test acc at best | final test acc | epochs | time | device |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["name"]):
        lines.append(
            f"| {r['name']} | {r['best_epoch']} ({r['best_by']}) | {_pct(r['best_test_acc'])} | "
            f"{_pct(r['final_test_acc'])} | {r['epochs']} | {r['seconds']:.0f} s | {r['device']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_app.report", description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", nargs="?", default=None, help="run store (default $CIFAR_RUNS_DIR or ./runs)")
    args = parser.parse_args(argv)
    rows = runs_table(RunStore(args.runs_dir))
    if not rows:
        print(f"no runs in {RunStore(args.runs_dir).root}")
        return 1
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
