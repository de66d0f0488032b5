"""Label sets: other training labels than the dataset's own, kept beside the data, and the edits made to them.

    <data root>/labels/<name>/
      labels.npy     int16: the set as it was made (version 0), one label per training image, in the copy's order
      set.json       where it came from (file, key), when, how many images, and `made_for`: the fingerprint of
                     the dataset's own training labels it was made against (a copy with the images in another
                     order, such as an image folder listed class by class, has another one and is refused)
      edits.jsonl    the append-only edit log: one line per version (the images, old and new label or excluded,
                     why, when); an undo is a line too, which puts back what the version it undoes changed
Version v of a set is version 0 with the log's first v lines applied, so every version a run trained on can be
read again; the dataset's files are never touched. `-1` (EXCLUDED) leaves an image out of training. A set may
also correct test labels (split "test" in the log): Evaluate scores a model on them beside the dataset's own.
A set is made from a CSV of `index,label` (a label is a number or a class name), a numpy array (.npy) or
CIFAR-10N's file (a .pt dict of arrays) with the key to use. numpy only, except for reading a .pt file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifar_app.atomic import atomic_write_bytes, atomic_write_json, file_lock
from cifar_app.data.formats import CLASSES, resolve_root
from cifar_app.data.label_files import (  # noqa: F401
    EXCLUDED,
    LabelSetError,
    check_labels,
    read_label_file,
)


LABELS_DIR = "labels"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")
OWN = "cifar10"  # the set a first edit makes when a run trained on the dataset's own labels


def labels_fingerprint(labels: np.ndarray) -> str:
    """16 hex digits that change with any label (and with the order of the images)."""
    return hashlib.sha1(np.ascontiguousarray(labels, dtype=np.int16).tobytes()).hexdigest()[:16]


def parse_spec(spec: str) -> tuple[str, int | None]:
    """'name' -> (name, None: the latest version); 'name@3' -> (name, 3)."""
    name, _, version = spec.partition("@")
    return name, int(version) if version else None


# -- label sets on disk ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One line of the edit log: what a version changed."""

    version: int
    when: float
    action: str  # relabel, exclude, keep, accept, undo, or several at once
    why: str
    edits: tuple[dict[str, Any], ...]  # {"split", "index", "old", "new"}
    undoes: int | None = None


@dataclass(frozen=True)
class LabelSet:
    """One label set's folder. Cheap to create; every method reads the disk."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / "set.json").read_text())

    def base(self) -> np.ndarray:
        return np.load(self.path / "labels.npy", allow_pickle=False).astype(np.int16)

    def log(self) -> list[Version]:
        """Every version after 0, in order. A last line cut short by a crash is not a version."""
        try:
            text = (self.path / "edits.jsonl").read_text()
        except FileNotFoundError:
            return []
        versions = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                break
            versions.append(Version(entry["version"], entry["when"], entry["action"], entry.get("why", ""),
                                    tuple(entry["edits"]), entry.get("undoes")))
        return versions

    @property
    def latest(self) -> int:
        return len(self.log())

    def resolve(self, version: int | None) -> int:
        latest = self.latest
        if version is None:
            return latest
        if not 0 <= version <= latest:
            raise LabelSetError(f"label set {self.name} has versions 0 to {latest}, not {version}.")
        return version

    def labels(self, version: int | None = None) -> np.ndarray:
        """The training labels at `version` (default the latest); EXCLUDED for an image left out."""
        labels = self.base().copy()
        for entry in self.log()[: self.resolve(version)]:
            for edit in entry.edits:
                if edit["split"] == "train":
                    labels[edit["index"]] = edit["new"]
        return labels

    def test_labels(self, dataset_test: np.ndarray, version: int | None = None) -> np.ndarray:
        """The dataset's test labels with this set's test corrections up to `version` applied."""
        labels = np.asarray(dataset_test).astype(np.int16).copy()
        for entry in self.log()[: self.resolve(version)]:
            for edit in entry.edits:
                if edit["split"] == "test":
                    labels[edit["index"]] = edit["new"]
        return labels

    def fingerprint(self, version: int | None = None) -> str:
        return labels_fingerprint(self.labels(version))

    def undo_target(self) -> Version | None:
        """The version an undo would take back: the latest one not undone yet (undo again walks further back)."""
        stack: list[Version] = []
        for entry in self.log():
            if entry.undoes is not None:
                if stack and stack[-1].version == entry.undoes:
                    stack.pop()
            else:
                stack.append(entry)
        return stack[-1] if stack else None

    def reviewed(self, split: str = "train") -> dict[int, str]:
        """{image index: what was decided (relabel, exclude or keep)} over the versions in force (not undone)."""
        undone = {entry.undoes for entry in self.log() if entry.undoes is not None}
        decided: dict[int, str] = {}
        for entry in self.log():
            if entry.undoes is not None or entry.version in undone:
                continue
            for edit in entry.edits:
                if edit["split"] == split:
                    decided[edit["index"]] = _kind(edit)
        return decided

    def edit(self, changes: list[tuple[str, int, int]], why: str = "", action: str = "",
             dataset_test: np.ndarray | None = None) -> Version:
        """Append a version that sets each (split, index, new label or EXCLUDED); a label equal to the current one
        records that a person kept it. Returns the new version."""
        if not changes:
            raise LabelSetError("nothing to change: pick at least one image.")
        with file_lock(self.path / ".lock"):
            train = self.labels()
            test = self.test_labels(dataset_test) if dataset_test is not None else None
            edits = []
            for split, index, new in changes:
                current = train if split == "train" else test
                if current is None:
                    raise LabelSetError("a test label can be corrected only with the dataset's test labels at hand.")
                if not 0 <= index < len(current):
                    raise LabelSetError(f"{split} image {index} is not in this dataset (0 to {len(current) - 1:,}).")
                if not EXCLUDED <= new < len(CLASSES):
                    raise LabelSetError(f"{new} is not a class (0 to {len(CLASSES) - 1}) or excluded ({EXCLUDED}).")
                edits.append({"split": split, "index": int(index), "old": int(current[index]), "new": int(new)})
            kinds = sorted({_kind(e) for e in edits})
            return self._append(action or (kinds[0] if len(kinds) == 1 else "+".join(kinds)), why, edits)

    def undo(self, why: str = "") -> Version:
        """Append a version that puts back what the latest version in force changed."""
        with file_lock(self.path / ".lock"):
            target = self.undo_target()
            if target is None:
                raise LabelSetError(f"label set {self.name} has no edit to undo.")
            edits = [{**e, "old": e["new"], "new": e["old"]} for e in reversed(target.edits)]
            return self._append("undo", why or f"undo version {target.version} ({target.action})", edits,
                                undoes=target.version)

    def _append(self, action: str, why: str, edits: list[dict[str, Any]], undoes: int | None = None) -> Version:
        entry = Version(self.latest + 1, time.time(), action, why, tuple(edits), undoes)
        line = json.dumps({"version": entry.version, "when": entry.when, "action": action, "why": why,
                           "edits": edits, **({"undoes": undoes} if undoes is not None else {})})
        with open(self.path / "edits.jsonl", "a", encoding="utf-8") as log:
            log.write(line + "\n")
            log.flush()
            os.fsync(log.fileno())
        return entry

    def describe(self, version: int | None = None) -> str:
        """'c10n-aggre@2: 50,000 labels, 3 changed and 1 excluded since version 0 (from CIFAR-10_human.pt, key …)'."""
        version = self.resolve(version)
        labels, base = self.labels(version), self.base()
        changed = int(((labels != base) & (labels != EXCLUDED)).sum())
        excluded = int((labels == EXCLUDED).sum())
        meta = self.meta()
        return (f"{self.name}@{version}: {len(labels):,} labels, {changed:,} changed and {excluded:,} excluded since "
                f"version 0, which differs from the dataset's own labels on {100 * meta.get('differs_from_own', 0):.1f}% "
                f"({meta.get('source', '')})")


def _kind(edit: dict[str, Any]) -> str:
    return "exclude" if edit["new"] == EXCLUDED else "keep" if edit["new"] == edit["old"] else "relabel"


class LabelStore:
    """The label sets beside one data root."""

    def __init__(self, data_dir: str | os.PathLike | None = None):
        self.root = resolve_root(data_dir) / LABELS_DIR

    def sets(self) -> list[LabelSet]:
        if not self.root.is_dir():
            return []
        return sorted((LabelSet(p) for p in self.root.iterdir() if (p / "set.json").is_file()), key=lambda s: s.name)

    def names(self) -> list[str]:
        return [s.name for s in self.sets()]

    def get(self, name: str) -> LabelSet:
        label_set = LabelSet(self.root / name)
        if not NAME.match(name) or not (label_set.path / "set.json").is_file():
            known = ", ".join(self.names()) or "none yet"
            raise LabelSetError(f"there is no label set {name!r} beside the data in {self.root.parent} (there are: "
                                f"{known}); make one with python -m cifar_app.labels import FILE --name {name}.")
        return label_set

    def create(self, name: str, labels: np.ndarray, own: np.ndarray, source: str, replace: bool = False) -> LabelSet:
        """A new set (version 0 = `labels`) made against a dataset whose own training labels are `own`."""
        if not NAME.match(name):
            raise LabelSetError(f"label set name {name!r}: use 1 to 60 letters, digits, '-', '_' or '.', starting with "
                                "a letter or digit.")
        labels = check_labels(labels, len(own), f"label set {name}")
        folder = self.root / name
        if (folder / "set.json").is_file() and not replace:
            raise LabelSetError(f"label set {name} exists already ({folder}); pick another name.")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "edits.jsonl").unlink(missing_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, labels)
        atomic_write_bytes(folder / "labels.npy", buffer.getvalue())
        differ = float(np.mean(labels != np.asarray(own)))
        atomic_write_json(folder / "set.json", {"name": name, "source": source, "created": time.time(),
                                                "images": len(labels), "made_for": labels_fingerprint(own),
                                                "differs_from_own": differ})
        return LabelSet(folder)

    def own_set(self, own: np.ndarray) -> LabelSet:
        """The set that edits of a run trained on the dataset's own labels go to (made from them on first use)."""
        try:
            return self.get(OWN)
        except LabelSetError:
            return self.create(OWN, own, own, "the dataset's own labels")

    def editable(self, name: str, own: np.ndarray) -> LabelSet:
        """The set named `name` that edits go to; OWN is the set of the dataset's own labels `own` (made on first
        use)."""
        return self.own_set(own) if name == OWN else self.get(name)


def apply_label_set(spec: str, data_dir: str | os.PathLike | None, own: np.ndarray) -> tuple[np.ndarray, dict]:
    """The training labels `spec` ('name' or 'name@version') names for a dataset whose own labels are `own`, and
    what a run records of them (name, version, fingerprint, changed and excluded images); LabelSetError when
    the set does not fit this copy of the data."""
    name, version = parse_spec(spec)
    label_set = LabelStore(data_dir).get(name)
    version = label_set.resolve(version)
    meta = label_set.meta()
    if meta.get("made_for") != labels_fingerprint(own):
        raise LabelSetError(
            f"label set {name} was made for a copy of CIFAR-10 whose images are in another order or carry other "
            f"labels than this one ({meta.get('images', '?'):,} images): its labels would land on the wrong images. "
            "Train on the copy it was made for (an image folder lists the images class by class; the python and "
            "binary releases, and CIFAR-10N, keep the original order).")
    labels = label_set.labels(version)
    record = {"name": name, "version": version, "fingerprint": labels_fingerprint(labels),
              "excluded": int((labels == EXCLUDED).sum()),
              "differs_from_own": float(np.mean((labels != own) & (labels != EXCLUDED)))}
    return labels, record


def label_set_line(store: LabelStore, spec: str) -> str:
    """'mine@2 (50,000 labels, 12 changed, 3 excluded)': a set's version in a line, for a selector."""
    name, version = parse_spec(spec)
    label_set = store.get(name)
    version = label_set.resolve(version)
    labels, base = label_set.labels(version), label_set.base()
    changed = int(((labels != base) & (labels != EXCLUDED)).sum())
    return f"{name}@{version} ({len(labels):,} labels, {changed:,} changed, {int((labels == EXCLUDED).sum()):,} excluded)"
