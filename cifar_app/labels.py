"""`python -m cifar_app.labels`: label sets beside the data (data/labels.py) and the search for wrong labels.

    import FILE [--key K] --name N    a label set from a CSV (index,label), a .npy array or CIFAR-10N's .pt file
    list                              the label sets beside the data, with their versions
    log NAME                          a set's edit log, version by version
    undo NAME                         take back the latest edit (itself a new version)
    find RUN [--folds K]              the label errors of the labels RUN trained on: its training dynamics, and
                                      confident learning on out-of-fold probabilities (K fold runs, trained as
                                      needed); the results are saved with the run
    accept RUN --top N [--into NAME]  relabel the top N suggestions of RUN's search as suggested: a new version
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from cifar_app.config import ConfigError
from cifar_app.data.formats import DataFormatError, DataNotFound
from cifar_app.data.labels import LabelSetError, LabelStore, parse_spec


def _own_labels(data_dir: str | None):
    """The training labels of the copy of CIFAR-10 in `data_dir` (numpy)."""
    from cifar_app.data.dataset import load_cifar10

    return load_cifar10(data_dir).train_labels.numpy()


def cmd_import(args: argparse.Namespace) -> str:
    from cifar_app.data.labels import read_label_file

    own = _own_labels(args.data_dir)
    labels = read_label_file(Path(args.file), len(own), key=args.key)
    source = Path(args.file).name + (f", key {args.key}" if args.key else "")
    label_set = LabelStore(args.data_dir).create(args.name, labels, own, source, replace=args.replace)
    differ = label_set.meta()["differs_from_own"]
    return (f"label set {label_set.name}: {len(labels):,} labels from {source}; {100 * differ:.1f}% differ from the "
            f"dataset's own. Train on it with --labels {label_set.name}.")


def cmd_list(args: argparse.Namespace) -> str:
    sets = LabelStore(args.data_dir).sets()
    if not sets:
        return (f"no label sets beside the data in {LabelStore(args.data_dir).root.parent} yet: "
                "python -m cifar_app.labels import FILE --name NAME")
    return "\n".join(label_set.describe() for label_set in sets)


def cmd_log(args: argparse.Namespace) -> str:
    label_set = LabelStore(args.data_dir).get(parse_spec(args.name)[0])
    lines = [f"{label_set.name}@0: {label_set.meta().get('source', '')}"]
    for entry in label_set.log():
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.when))
        lines.append(f"{label_set.name}@{entry.version}: {when} {entry.action} of {len(entry.edits):,} image(s)"
                     + (f": {entry.why}" if entry.why else ""))
    return "\n".join(lines)


def cmd_undo(args: argparse.Namespace) -> str:
    label_set = LabelStore(args.data_dir).get(parse_spec(args.name)[0])
    entry = label_set.undo()
    return f"{label_set.name}@{entry.version}: {entry.why}. Now: {label_set.describe()}"


def cmd_find(args: argparse.Namespace) -> str:
    from cifar_app.analysis.label_search import find_label_errors

    return find_label_errors(args.run, runs_dir=args.runs_dir, data_dir=args.data_dir, folds=args.folds,
                             say=lambda line: print(line, flush=True))


def cmd_accept(args: argparse.Namespace) -> str:
    from cifar_app.analysis.label_search import accept_top

    return accept_top(args.run, args.top, runs_dir=args.runs_dir, data_dir=args.data_dir, into=args.into)


def _with(parent: argparse.ArgumentParser) -> type:
    class Command(argparse.ArgumentParser):
        def __init__(self, **kwargs):
            super().__init__(parents=[parent], **kwargs)

    return Command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cifar_app.labels", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = argparse.ArgumentParser(add_help=False)  # before or after the command, as the user types it
    where.add_argument("--data-dir", default=argparse.SUPPRESS, help="the data root (default $CIFAR_DATA_DIR or ./data)")
    where.add_argument("--runs-dir", default=argparse.SUPPRESS,
                       help="where runs are saved (default $CIFAR_RUNS_DIR or ./runs)")
    parser.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--runs-dir", default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_with(where))
    made = commands.add_parser("import", help="make a label set from a file")
    made.add_argument("file", help="a .csv of index,label, a .npy array, or a .pt dict of arrays (CIFAR-10N's)")
    made.add_argument("--key", default=None, help="the array of a .pt file to use, e.g. aggre_label")
    made.add_argument("--name", required=True, help="the set's name (letters, digits, '-', '_', '.')")
    made.add_argument("--replace", action="store_true", help="replace a set of this name (its edits are lost)")
    commands.add_parser("list", help="the label sets beside the data")
    for name, text in (("log", "a set's edit log"), ("undo", "take back a set's latest edit")):
        commands.add_parser(name, help=text).add_argument("name", help="the label set")
    find = commands.add_parser("find", help="find the label errors of the labels a run trained on")
    find.add_argument("run", help="a run id in the runs folder")
    find.add_argument("--folds", type=int, default=4, help="cross-validation folds (K runs of the run's recipe)")
    accept = commands.add_parser("accept", help="accept the top N suggestions of a run's search")
    accept.add_argument("run", help="a run whose label errors were found")
    accept.add_argument("--top", type=int, required=True, help="how many of the flagged images, the likeliest first")
    accept.add_argument("--into", default=None, help="the label set to edit (default: the one the run trained on)")
    return parser


COMMANDS = {"import": cmd_import, "list": cmd_list, "log": cmd_log, "undo": cmd_undo, "find": cmd_find,
            "accept": cmd_accept}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(COMMANDS[args.command](args))
    except (LabelSetError, ConfigError, DataNotFound, DataFormatError, KeyError, RuntimeError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) else error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
