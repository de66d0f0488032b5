"""Where a run comes from and where it may go next: resume (the same run, on from its last checkpoint) and
fork (a new run from a saved epoch of an old one, with changed hyperparameters).

The dashboard and the CLI ask here before they start either, so both refuse the same things with the same
sentences; `train` does the work.
"""

from __future__ import annotations

from cifar_app.config import RUNTIME_FIELDS, TrainConfig
from cifar_app.store.runs import Run

# What a resumed run may change: where and how it runs, never what it learns (train() applies these). Its name
# is its own, and so is whether it records each image's learning (a record with a hole would mislead).
RESUME_RUNTIME_FIELDS = tuple(f for f in RUNTIME_FIELDS if f not in ("name", "records"))
# A fork loads its parent's weights, so the network's shape must stay.
ARCHITECTURE_FIELDS = ("blocks", "k", "width")
# Fields that decide which training images a run sees; a fork that changes them sees other images.
SPLIT_FIELDS = ("val_size", "train_subset", "seed")


def checkpoint_position(run: Run, which: str) -> tuple[int, int] | None:
    """(epochs done, batches done of the next epoch) at a checkpoint, None when it is missing or unreadable.
    Maps the file rather than reading it, so it is cheap even for a large model."""
    try:
        saved = run.load_checkpoint(which, mmap=True)
        return int(saved["epoch"]), int(saved.get("batch", 0))
    except Exception:  # absent, truncated, not a checkpoint: torch raises many kinds
        return None


def branch_epoch(run: Run, which: str) -> int | None:
    """The epoch a checkpoint was saved after (None when it cannot be read)."""
    position = checkpoint_position(run, which)
    return position[0] if position else None


def fork_problems(parent: Run, which: str, config: TrainConfig) -> list[str]:
    """Why `config` cannot fork from `parent`'s `which` checkpoint, one sentence each; empty when it can."""
    if which not in ("best", "last"):
        return [f"a fork starts from the 'best' or the 'last' checkpoint (got {which!r})."]
    epoch = branch_epoch(parent, which)
    if epoch is None:
        return [f"run {parent.name} has no readable {which} checkpoint to fork from."]
    problems = []
    saved = parent.config()
    changed = [f"{name} {getattr(saved, name)} -> {getattr(config, name)}" for name in ARCHITECTURE_FIELDS
               if getattr(saved, name) != getattr(config, name)]
    if changed:
        problems.append("a fork keeps its parent's network, whose weights it loads: blocks, K and width must stay "
                        f"as they were ({', '.join(changed)}).")
    if config.epochs <= epoch and not config.time_budget:  # a budget plans the fork's epochs from its branch
        problems.append(f"the fork starts after epoch {epoch}; set more than {epoch} epochs in all.")
    return problems


class DataMismatch(ValueError):
    """A run asked to go on with other data than it trained on; the message says so and what to do."""


def other_data(run: Run, fingerprint: str | None) -> str | None:
    """The data source `run` trained on when it is not the data with this fingerprint (formats.data_fingerprint);
    None when it is the same, or when either is unknown (a run from before fingerprints)."""
    record = run.config_record()
    saved = record.get("data_fingerprint")
    if not saved or not fingerprint or saved == fingerprint:
        return None
    return record.get("data_source") or "another copy"


def check_resume_data(run: Run | None, fingerprint: str | None) -> None:
    """Refuse to resume `run` (when there is one) on other data: its validation split (by position) would hold other images, and its
    per-image record would go on with other images' labels."""
    source = other_data(run, fingerprint) if run is not None else None
    if source is not None:
        raise DataMismatch(
            f"{run.name} cannot be resumed on this data: it trained on other data ({source}). Resumed here, its "
            "validation split would hold other images and its per-image record would go on with other labels. "
            "Choose the copy it trained on (the sidebar's data copy, or --data-dir), or fork it to train on this one."
        )


def fork_warnings(parent: Run, config: TrainConfig, fingerprint: str | None = None) -> list[str]:
    """What a fork may do but should know: a changed split mixes images the parent trained on into validation;
    other data than the parent's (by `fingerprint`) makes its accuracies another measure."""
    warnings = []
    source = other_data(parent, fingerprint)
    if source is not None:
        warnings.append(f"this data is not the data the parent trained on ({source}): the fork's accuracies are not "
                        "comparable with its parent's, and its per-image record starts afresh.")
    saved = parent.config()
    changed = [name for name in SPLIT_FIELDS if getattr(saved, name) != getattr(config, name)]
    if not changed or (saved.val_size == 0 and config.val_size == 0):
        return warnings
    verb = "differs" if len(changed) == 1 else "differ"
    return [*warnings, f"{', '.join(changed)} {verb} from the parent's: the validation split is drawn anew, so it "
            "holds images the parent trained on, and the fork's validation accuracy flatters it."]
