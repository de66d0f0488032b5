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


def fork_warnings(parent: Run, config: TrainConfig) -> list[str]:
    """What a fork may do but should know: a changed split mixes images the parent trained on into validation."""
    saved = parent.config()
    changed = [name for name in SPLIT_FIELDS if getattr(saved, name) != getattr(config, name)]
    if not changed or (saved.val_size == 0 and config.val_size == 0):
        return []
    verb = "differs" if len(changed) == 1 else "differ"
    return [f"{', '.join(changed)} {verb} from the parent's: the validation split is drawn anew, so it holds "
            "images the parent trained on, and the fork's validation accuracy flatters it."]
