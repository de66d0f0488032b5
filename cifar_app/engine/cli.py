"""`python -m cifar_app.train`: the headless trainer. Every hyperparameter is a flag (from TrainConfig's
fields), a preset starts the config, and --resume / --fork continue a saved run; the coursework's three lines
are printed at every epoch's end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import MISSING, fields
from typing import Any

from cifar_app.config import (
    DEVICES, IMPLS, OPTIMIZERS, PRECISIONS, PRESETS, RUNTIME_FIELDS, SCHEDULES, ConfigError, TrainConfig,
    parse_duration, preset,
)
from cifar_app.data.formats import DataFormatError, DataNotFound
from cifar_app.device import DeviceError, pick_device
from cifar_app.engine.loop import CHECKPOINT_EVERY_S, train
from cifar_app.engine.memory import check_memory, own_rss
from cifar_app.events import BatchEvent, EndEvent, EpochEvent, EvalEvent, Event, StatusEvent
from cifar_app.store.lineage import DataMismatch, fork_warnings
from cifar_app.store.live import LiveLog
from cifar_app.store.runs import Run, RunStore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cifar_app.train",
        description="Train the coursework's dynamic-convolution CNN on CIFAR-10 without the dashboard.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="start from a preset (default: seed; with --fork, the parent run's hyperparameters); "
                             "any option below overrides it")
    choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "device": DEVICES, "impl": IMPLS, "precision": PRECISIONS}
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"{f.metadata['help']} (seed: {default})"}
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif f.name == "time_budget":
            kwargs["help"] = f"{f.metadata['help']} (seed: off)"
            parser.add_argument(flag, type=_duration, metavar="DURATION", **kwargs)
        else:
            parser.add_argument(flag, type=type(default), choices=choices.get(f.name), **kwargs)
    parser.add_argument("--runs-dir", default=None, help="where runs are saved (default $CIFAR_RUNS_DIR or ./runs)")
    parser.add_argument("--no-save", action="store_true", help="do not write a run folder")
    parser.add_argument("--resume", metavar="RUN", default=None, help="continue an interrupted or stopped run")
    parser.add_argument("--fork", metavar="RUN[:best|last]", default=None,
                        help="a new run from a saved run's best or last checkpoint (default last): the parent's "
                             "hyperparameters, changed by the options given here")
    parser.add_argument("--quiet", action="store_true", help="no progress line between epochs")
    parser.add_argument("--checkpoint-every", type=float, default=CHECKPOINT_EVERY_S, metavar="SECONDS",
                        help="within an epoch, save a checkpoint this often, so a kill loses at most this much")
    parser.add_argument("--run-id", default="", metavar="ID",
                        help="make the run in this folder of the runs folder (the app reserves one for each run it "
                             "starts); default: a new folder named after the time and the run's name")
    return parser


def _duration(text: str) -> float:
    """--time-budget's value in seconds; argparse prints the sentence of a value it cannot read."""
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class Refused(Exception):
    """The command line asks for something the run store cannot do; the message says why."""


def runs_to_continue(args: dict[str, Any], options: dict[str, Any],
                     store: RunStore) -> tuple[TrainConfig, Run | None, tuple[Run, str] | None]:
    """The config to train, and the run to resume or fork, as --preset, --resume and --fork say."""
    config, resume, fork = preset(args["preset"] or "seed", **options), None, None
    if args["resume"]:
        resume = store.get(args["resume"])
        saved = resume.config()
        changed = sorted(k for k, v in options.items() if k not in RUNTIME_FIELDS and getattr(saved, k) != v)
        if changed:
            raise Refused(f"--resume continues {resume.name} with its own hyperparameters; "
                          f"{', '.join('--' + k.replace('_', '-') for k in changed)} cannot change. "
                          f"To train on with other settings, use --fork {resume.id}.")
        config = saved.replace(**options)
        problem = resume.resume_problem()
        if problem:
            raise Refused(f"{resume.name} cannot be resumed: {problem}")
    if args["fork"]:
        run_id, _, which = args["fork"].partition(":")
        fork = (store.get(run_id), which or "last")
        if args["preset"] is None:  # the parent's recipe, changed where the command line says
            config = fork[0].config().replace(**{"name": f"{fork[0].name}-fork", **options})
        for warning in fork_warnings(fork[0], config):
            print(f"warning: {warning}")
    return config, resume, fork


def memory_check(config: TrainConfig) -> None:
    """Refuse a run that cannot fit in the memory free here (this process's own Python and torch count as free:
    the run reuses them); warn past half of it."""
    check = check_memory(config.check(), pick_device(config.device), in_use=own_rss())
    if check.problem():
        raise Refused(f"not started: {check.problem()}")
    if check.warning():
        print(f"warning: {check.warning()}")


def printer(show_progress: bool) -> Callable[[Event], None]:
    """The CLI's on_event: status lines, the coursework's epoch lines, and a progress line on a terminal."""

    def on_event(event: Event) -> None:
        if isinstance(event, StatusEvent):
            print(event.message, flush=True)
        elif isinstance(event, BatchEvent) and show_progress:
            print(f"\repoch {event.epoch}/{event.epochs}  batch {event.batch}/{event.batches}  loss {event.loss:.4f}  "
                  f"{event.images_per_s:,.0f} images/s  ETA {event.run_eta_s:,.0f} s   ", end="", flush=True)
        elif isinstance(event, EvalEvent) and show_progress:
            print(f"\repoch {event.epoch}/{event.epochs}  {event.split}: {event.done:,} of {event.total:,} images  "
                  f"ETA {event.run_eta_s:,.0f} s   ", end="", flush=True)
        elif isinstance(event, EpochEvent):
            if show_progress:
                print("\r" + " " * 100 + "\r", end="")
            print("\n".join(event.lines()), flush=True)

    return on_event


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (the app's Stop, `kill`) or Ctrl-C ends the run within one batch, keeping what it learned; a second
    Ctrl-C interrupts at once."""

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping within one batch (Ctrl-C again to interrupt now)", flush=True)

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Train from the command line; returns the exit status (0 finished, 1 failed or refused, 130 stopped)."""
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = {k: args.pop(k) for k in list(args) if k in TrainConfig.__dataclass_fields__}
    store, stop = RunStore(args["runs_dir"]), threading.Event()
    try:
        config, resume, fork = runs_to_continue(args, options, store)
        memory_check(config)
        saving = None if args["no_save"] and not (resume or fork) else store
        with stop_on_signals(stop):
            result = train(config, on_event=printer(not args["quiet"] and sys.stdout.isatty()), store=saving,
                           stop=stop, resume=resume, fork=fork, checkpoint_every_s=args["checkpoint_every"],
                           run_id=args["run_id"])
    except (ConfigError, DeviceError, DataNotFound, DataFormatError, DataMismatch, KeyError, FileNotFoundError,
            Refused) as error:
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        print(f"error: {message}")
        if args["run_id"]:  # the app that reserved the folder is watching its live log: tell it why
            LiveLog(store.root / args["run_id"])(EndEvent("failed", message, 0.0))
        return 1
    print("\n".join(result.summary_lines()))
    return {"finished": 0, "stopped": 130}.get(result.status, 1)
