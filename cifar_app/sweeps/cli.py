"""`python -m cifar_app.sweep`: create a sweep, run workers (here or on many machines), read the leaderboard.

The storage's URL comes from $CIFAR_SWEEP_STORAGE (or --storage without a password: every user of a machine can
read every command line; libpq's ~/.pgpass holds a password too).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any

from cifar_app.config import PRESETS, ConfigError, default_data_dir
from cifar_app.data.formats import DataFormatError, DataNotFound
from cifar_app.device import gpu_count
from cifar_app.sweeps.claims import look_after
from cifar_app.sweeps.space import FIELD_TYPES, SearchSpace, SpaceError, parse_value
from cifar_app.sweeps.spec import (
    DEFAULT_VAL_SIZE, GRACE_S, HEARTBEAT_S, PRUNERS, SAMPLERS, SweepSpec, create_sweep, list_sweeps, load_sweep,
    request_stop,
)
from cifar_app.sweeps.storage import ENV, SweepError, SweepStorage, password_of
from cifar_app.sweeps.views import leaderboard_lines
from cifar_app.sweeps.worker import launch_workers, work

NOT_SET = {"eval_every": "a sweep tests each trial once, at its last epoch (the epoch its objective comes from)"}


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """`--set name=value` pairs as typed config values."""
    values = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in FIELD_TYPES:
            raise SweepError(f"--set {setting!r}: write name=value with a training option's name (e.g. epochs=5).")
        if name in NOT_SET:
            raise SweepError(f"--set {setting!r}: {NOT_SET[name]}; leave it out.")
        try:
            values[name] = parse_value(name, text)
        except ValueError as error:
            raise SweepError(f"--set {setting!r}: {error}") from None
    return values


def spec_from_args(args: Any) -> SweepSpec:
    """The sweep the create options describe: a preset, the split, --set overrides and the search space."""
    try:
        space = SearchSpace.from_file(args.space) if args.space else SearchSpace(())
        space = SearchSpace(space.dimensions + SearchSpace.from_flags(args.vary or []).dimensions)
    except SpaceError as error:
        raise SweepError(str(error)) from None
    return SweepSpec.from_preset(
        args.name, args.preset, space, data_dir=args.data_dir or default_data_dir(), val_size=args.val_size,
        train_subset=args.train_subset, records=args.records, settings=parse_settings(args.set or []),
        trials=args.trials, sampler=args.sampler, pruner=args.pruner, workers=args.workers or 1,
        prune_startup=args.prune_startup, heartbeat_s=args.heartbeat, grace_s=args.grace_period)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cifar_app.sweep",
        description="Hyperparameter sweeps on Optuna: create a sweep, run workers (here or on many machines), "
                    "read the leaderboard.")
    commands = parser.add_subparsers(dest="command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--storage", default=None,
                        help=f"a PostgreSQL URL shared by every machine, without its password (default ${ENV}, where "
                             "a password may go; else a journal file in the runs folder)")
    shared.add_argument("--runs-dir", default=None,
                        help="the run store every trial is saved in; on many machines a folder all of them reach "
                             "(default $CIFAR_RUNS_DIR or ./runs)")
    create = argparse.ArgumentParser(add_help=False)
    create.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="what every trial starts from")
    create.add_argument("--vary", action="append", metavar="NAME=SPEC",
                        help="a hyperparameter to search: lr=1e-4:1e-2:log, width=8:32:step=8, batch_size=64,128,256 "
                             "(repeat the flag)")
    create.add_argument("--space", metavar="FILE", help='a JSON or TOML file: {"lr": {"low": 1e-4, "high": 1e-2, '
                                                        '"log": true}, "batch_size": [64, 128]}')
    create.add_argument("--trials", type=int, default=20, help="the budget: trials in all, over every worker")
    create.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="grid needs a finite space")
    create.add_argument("--pruner", choices=PRUNERS, default="median",
                        help="stop poor trials early on their per-epoch validation accuracy")
    create.add_argument("--prune-startup", type=int, default=3,
                        help="trials that run to the end before the median pruner judges any")
    create.add_argument("--workers", type=int, default=None,
                        help="trials at once on this machine (default: one per GPU, else 1)")
    create.add_argument("--heartbeat", type=int, default=HEARTBEAT_S,
                        help="seconds between a worker's trial heartbeats (database storages)")
    create.add_argument("--grace-period", type=int, default=GRACE_S,
                        help="seconds a trial's heartbeat may be silent before it is failed and run again")
    create.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE, help="held-out images: the objective")
    create.add_argument("--train-subset", type=int, default=0, help="train each trial on N images (0 = all)")
    create.add_argument("--data-dir", default=None, help="where CIFAR-10 is (default $CIFAR_DATA_DIR or ./data)")
    create.add_argument("--records", action=argparse.BooleanOptionalAction, default=False,
                        help="keep each trial's per-image record (Dynamics page; a few MB per trial)")
    create.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="any other training option for every trial, e.g. epochs=5 (repeat the flag)")
    for name, parents, text in [
        ("create", [shared, create], "create a sweep (nothing trains yet)"),
        ("run", [shared, create], "create the sweep (with --vary or --space; without, join the existing one), "
                                  "start --workers here, wait, print the leaderboard"),
        ("work", [shared], "one worker: train the sweep's trials until its budget is spent (start one per GPU)"),
        ("show", [shared], "the leaderboard and the hyperparameter importances"),
        ("stop", [shared], "stop every worker of the sweep within one batch"),
        ("list", [shared], "the sweeps in the storage"),
    ]:
        command = commands.add_parser(name, parents=parents, help=text, description=text)
        if name != "list":
            command.add_argument("name", help="the sweep's name")
        if name == "work":
            command.add_argument("--data-dir", default=None, help="where CIFAR-10 is on this machine (default: "
                                                                  "the folder the sweep was created with)")
    return parser


def _run_workers(name: str, storage: SweepStorage, count: int) -> int:
    """Start `count` workers here and wait for them. Ctrl-C reaches them too: each ends its trial within a batch."""
    gpus = gpu_count()
    processes = launch_workers(name, storage, count, gpus, terminal=True)
    print(f"started {count} worker(s) {'one per GPU' if gpus else 'on the CPU'}", flush=True)
    while True:
        try:
            for process in processes:
                process.wait()
            return 0
        except KeyboardInterrupt:
            print(f"\nthe workers here end their trials within one batch; the sweep stays open (`work {name}` goes "
                  f"on with it, `stop {name}` stops its workers everywhere)", flush=True)


def _leave_now(signum: int, frame: Any) -> None:
    """Ctrl-C or kill -TERM before a trial is taken (connecting, loading the data): end at once. os._exit, because
    a reader thread blocked on a stalled disk would otherwise hold the interpreter's exit."""
    print("\nstopped before taking a trial (while connecting or loading the data): nothing to save", flush=True)
    os._exit(128 + signum)


def _work(args: Any, storage: SweepStorage) -> int:
    quit = threading.Event()

    def end_trial(signum: int, frame: Any) -> None:
        if quit.is_set():  # asked twice: leave now; the trial is failed by the heartbeat (or pid) and run again
            _leave_now(signum, frame)
        quit.set()
        print("\nending this worker's trial within one batch (its run is kept; the sweep runs it again); "
              "Ctrl-C again to leave at once", flush=True)

    def trials_started() -> None:  # from here, kill -TERM or Ctrl-C ends the trial within a batch, cleanly
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, end_trial)

    before = {sig: signal.signal(sig, _leave_now) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        ran = work(args.name, storage, data_dir=args.data_dir, quit=quit, echo=lambda line: print(line, flush=True),
                   on_loaded=trials_started)
    finally:  # called in-process (tests), the caller's handlers come back
        for sig, handler in before.items():
            signal.signal(sig, handler)
    print(f"worker done: {', '.join(f'{n} {s}' for s, n in ran.items()) or 'no trial left to run'}", flush=True)
    return 0


def _storage(args: Any) -> SweepStorage:
    if args.storage and password_of(args.storage):
        raise SweepError(f"--storage carries a password, and every user of this machine can read a command line "
                         f"(ps): export {ENV}=<the URL> instead, or keep the password in ~/.pgpass.")
    return SweepStorage(args.runs_dir, args.storage)


def _command(args: Any, storage: SweepStorage) -> int:
    if args.command in ("create", "run"):
        if args.command == "create" or args.vary or args.space:
            study = create_sweep(spec_from_args(args), storage)
            spec = SweepSpec.from_dict(study.user_attrs["spec"])
            print(f"created sweep {spec.name} in {storage.describe()}", *spec.describe(), sep="\n")
        if args.command == "run":
            spec = load_sweep(args.name, storage)[1]
            _run_workers(args.name, storage, args.workers or gpu_count() or spec.workers)
            print("\n".join(leaderboard_lines(*load_sweep(args.name, storage))))
    elif args.command == "work":
        return _work(args, storage)
    elif args.command == "show":
        study, spec = load_sweep(args.name, storage)
        look_after(study, storage)  # as the page does: a dead worker's trial is failed and queued again
        print("\n".join(leaderboard_lines(study, spec)))
    elif args.command == "stop":
        request_stop(load_sweep(args.name, storage)[0])
        print(f"asked the workers of {args.name} to stop; each ends its trial within one batch")
    else:
        names = list_sweeps(storage)
        print("\n".join(names) if names else f"no sweeps in {storage.describe()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The sweep CLI; the exit status is 0 when the command did what it says, 1 when it was refused."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        storage = _storage(args)
        with storage.reachable():
            return _command(args, storage)
    except (SweepError, DataNotFound, DataFormatError, ConfigError) as error:
        print(f"error: {error}", flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
