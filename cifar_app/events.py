"""What a training run reports, and the one rule that picks its best and final epochs. No torch here.

The training loop sends these events to whoever listens (the CLI prints them, the dashboard's job keeps
them); the run store's metrics.csv holds the EpochEvent rows, and `History` reads either back:
  StatusEvent  what it is doing before the first batch (loading data, building the model, ...);
  BatchEvent   a few times a second: batch i of n, running loss, learning rate, images/s, elapsed and ETA;
  EvalEvent    while the end of an epoch evaluates: which split, images done of total;
  EpochEvent   once per epoch: the coursework's three lines (training loss, training accuracy, test
               accuracy), validation accuracy when a split is held out, learning rate and seconds;
  ResumeEvent  once, when a saved run continues: the epochs it had already done.
  EndEvent     once, when the run ends: finished, stopped or failed, with the reason and the figures in words.
`to_dict`/`from_dict` carry them through a run's live event log (store/live.py) to a process that watches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "val_acc", "test_acc", "lr", "seconds", "images_per_s")


@dataclass
class StatusEvent:
    message: str
    kind: str = "status"


@dataclass
class BatchEvent:
    epoch: int
    epochs: int
    batch: int  # batches done in this epoch, 1..batches
    batches: int
    loss: float  # mean training loss over the batches since the previous BatchEvent
    lr: float  # the learning rate of the latest batch
    images_per_s: float  # smoothed over the last half minute or so
    epoch_elapsed_s: float
    elapsed_s: float  # the whole run's training time, earlier sessions of a resumed run included
    epoch_eta_s: float
    run_eta_s: float
    kind: str = "batch"


@dataclass
class EvalEvent:
    epoch: int
    epochs: int
    split: str  # "validation" or "test"
    done: int  # images evaluated so far
    total: int
    elapsed_s: float
    run_eta_s: float
    kind: str = "eval"


@dataclass
class EpochEvent:
    epoch: int
    epochs: int
    train_loss: float
    train_acc: float
    val_acc: float | None
    test_acc: float | None
    lr: float
    seconds: float
    images_per_s: float
    kind: str = "epoch"

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("kind", "epochs")}

    def lines(self) -> list[str]:
        """The coursework's per-epoch lines."""
        head = f"epoch {self.epoch}/{self.epochs}"
        lines = [f"{head}  training loss {self.train_loss:.4f}", f"{head}  training accuracy {self.train_acc:.2f}%"]
        if self.val_acc is not None:
            lines.append(f"{head}  validation accuracy {self.val_acc:.2f}%")
        tail = f"   ({self.seconds:.1f} s, {self.images_per_s:,.0f} images/s, lr {self.lr:.2e})"
        test = f"{self.test_acc:.2f}%" if self.test_acc is not None else "not evaluated this epoch"
        lines.append(f"{head}  test accuracy {test}{tail}")
        return lines


@dataclass
class ResumeEvent:
    """A resumed run's saved epochs, sent once before its first batch, so a live view can draw the whole run (and
    forget what it saw after the checkpoint the run goes on from: that part is trained again)."""

    run_id: str
    epoch: int  # epochs already done
    batch: int  # batches already done of the next epoch (a run stopped mid-epoch)
    history: list[EpochEvent]
    batches: int = 0  # batches of an epoch (0: not known)
    kind: str = "resume"

    def where(self) -> str:
        """'epoch 3', 'epoch 3, batch 41' or 'the end of epoch 1' (stopped during its evaluation)."""
        if self.batches and self.batch >= self.batches:
            return f"the end of epoch {self.epoch + 1} (its evaluation)"
        return f"epoch {self.epoch + 1}" + (f", batch {self.batch + 1}" if self.batch else "")


@dataclass
class EndEvent:
    """How a run ended, sent once at its end."""

    status: str  # finished, stopped or failed
    reason: str
    seconds: float  # the run's training time, earlier sessions of a resumed run included
    summary: list[str] = field(default_factory=list)  # the figures in words, as the CLI prints them
    kind: str = "end"


Event = StatusEvent | BatchEvent | EvalEvent | EpochEvent | ResumeEvent | EndEvent
KINDS = {cls.kind: cls for cls in (StatusEvent, BatchEvent, EvalEvent, EpochEvent, ResumeEvent, EndEvent)}


def to_dict(event: Event) -> dict[str, Any]:
    return asdict(event)


def from_dict(values: dict[str, Any]) -> Event:
    """An event back from `to_dict`; unknown keys (a newer writer's) are ignored."""
    cls = KINDS[values["kind"]]
    known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
    if cls is ResumeEvent:
        known["history"] = [from_dict(e) for e in known.get("history", [])]
    return cls(**known)


def records_from_rows(rows: list[dict[str, Any]], epochs: int) -> list[EpochEvent]:
    """metrics.csv rows back as epoch events."""
    return [EpochEvent(epochs=epochs, **{k: r[k] for k in METRIC_FIELDS}) for r in rows]


def selection(history: list[EpochEvent]) -> str:
    """What picks the best epoch: 'validation' when a split was held out, else 'test' (which flatters)."""
    return "validation" if any(e.val_acc is not None for e in history) else "test"


def best_epoch(history: list[EpochEvent]) -> EpochEvent | None:
    """The best epoch by validation accuracy when one was measured, else by test accuracy; ties: earliest."""
    key = "val_acc" if selection(history) == "validation" else "test_acc"
    scored = [e for e in history if getattr(e, key) is not None and e.test_acc is not None]
    return max(scored, key=lambda e: getattr(e, key)) if scored else None


def final_epoch(history: list[EpochEvent]) -> EpochEvent | None:
    """The last epoch whose test accuracy was measured."""
    tested = [e for e in history if e.test_acc is not None]
    return tested[-1] if tested else None


class History:
    """The best, final and selection of a list of epochs, for anything that holds one as `self.history`."""

    history: list[EpochEvent]

    @property
    def best(self) -> EpochEvent | None:
        return best_epoch(self.history)

    @property
    def final(self) -> EpochEvent | None:
        return final_epoch(self.history)

    @property
    def selection(self) -> str:
        return selection(self.history)

    def figure_lines(self) -> list[str]:
        """Best, final and last training figures in words, as the CLI prints them at the end of a run."""
        best, final, lines = self.best, self.final, []
        if best is not None and self.selection == "validation":
            lines.append(f"best validation accuracy {best.val_acc:.2f}% at epoch {best.epoch}; "
                         f"test accuracy at that epoch {best.test_acc:.2f}%")
        elif best is not None:
            lines.append(f"best test accuracy {best.test_acc:.2f}% at epoch {best.epoch} (picked by test accuracy, as "
                         "the coursework did; this flatters the result: hold out a validation split with --val-size)")
        if final is not None:
            lines.append(f"final test accuracy {final.test_acc:.2f}% at epoch {final.epoch}")
        if self.history:
            last = self.history[-1]
            lines.append(f"final training accuracy {last.train_acc:.2f}%, training loss {last.train_loss:.4f}")
        return lines
