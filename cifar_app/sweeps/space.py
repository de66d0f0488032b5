"""A sweep's search space: which hyperparameters vary, over what, and every way a space can be impossible.

A dimension is a range (`low`..`high`, linear or log, optionally stepped) or a list of choices of one
TrainConfig field. A space is read from command-line flags (`lr=1e-4:1e-2:log`, `batch_size=64,128,256`,
`width=8:32:step=8`) or a small JSON/TOML file (`{"lr": {"low": 1e-4, "high": 1e-2, "log": true}}`), and
`problems(base)` says, one sentence each, why it cannot run. No Optuna or torch here: `suggest` takes any
object with Optuna's `suggest_*` methods.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cifar_app.config import RUNTIME_FIELDS, TrainConfig

# Fields every trial shares: the split the trials are compared on (seed picks it), and the evaluation cadence.
SHARED_FIELDS = ("val_size", "train_subset", "seed", "eval_every")
FIELD_TYPES = {f.name: type(getattr(TrainConfig(data_dir=""), f.name)) for f in fields(TrainConfig)}
SWEEPABLE = tuple(name for name in FIELD_TYPES if name not in RUNTIME_FIELDS and name not in SHARED_FIELDS)
MAX_GRID = 10_000  # a grid this large is a typo, not a plan: it would never finish
# The rules of TrainConfig.validate() that join fields (the parameter cap of blocks x K x width; warm-up shorter
# than the run) bind hardest where each of these fields is at this end of its range: a space is checked there too.
HARDEST = {"blocks": max, "k": max, "width": max, "warmup_epochs": max, "epochs": min}


def param_column(name: str) -> str:
    """The column of a varied hyperparameter in a trials table: apart from the table's own columns (`epochs`
    is both a hyperparameter and the table's progress column)."""
    return f"param {name}"


class SpaceError(ValueError):
    """A search space that cannot be read or cannot run; `problems` holds one sentence per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Invalid search space:\n  - " + "\n  - ".join(problems))


def parse_value(name: str, text: Any) -> Any:
    """A value of field `name` from text (or from JSON/TOML, already typed), as the field's own type."""
    kind = FIELD_TYPES[name]
    if kind is bool:
        if isinstance(text, bool):
            return text
        lowered = str(text).strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"{name} is on or off: write true or false (got {text!r}).")
    if kind is str:
        return str(text).strip()
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} takes a number (got {text!r}).") from None
    if kind is int:
        if not number.is_integer():
            raise ValueError(f"{name} takes whole numbers (got {text!r}).")
        return int(number)
    return number


@dataclass(frozen=True)
class Dimension:
    """One field that varies: a range (low, high, log, step) or a list of choices."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def is_range(self) -> bool:
        return self.choices is None

    def describe(self) -> str:
        if not self.is_range:
            return f"{self.name} in {{{', '.join(str(c) for c in self.choices)}}}"
        scale = "log" if self.log else (f"step {self.step:g}" if self.step else "linear")
        return f"{self.name} from {self.low:g} to {self.high:g} ({scale})"

    def problems(self) -> list[str]:
        """What is wrong with this dimension on its own (not yet against a config)."""
        name, kind = self.name, FIELD_TYPES.get(self.name)
        if kind is None or name not in SWEEPABLE:
            shared = " (every trial shares it: set it for the whole sweep)" if name in SHARED_FIELDS else ""
            return [f"{name!r} is not a hyperparameter a sweep varies{shared}; choose from {', '.join(SWEEPABLE)}."]
        if not self.is_range:
            if not self.choices:
                return [f"{name}: no values to choose from."]
            if len(set(self.choices)) < len(self.choices):
                return [f"{name}: a value is listed twice ({', '.join(str(c) for c in self.choices)})."]
            return []
        if kind in (bool, str):
            return [f"{name} is not a number: list its values instead of a range (e.g. {name}=" +
                    ("true,false" if kind is bool else "a,b") + ")."]
        if self.low is None or self.high is None:
            return [f"{name}: a range needs a low and a high end."]
        problems = []
        if self.low > self.high:
            problems.append(f"{name}: the low end {self.low:g} is above the high end {self.high:g}.")
        if self.log and self.low <= 0:
            problems.append(f"{name}: a log range needs a positive low end (got {self.low:g}).")
        if self.log and self.step:
            problems.append(f"{name}: a log range cannot also have a step.")
        if self.step is not None and self.step <= 0:
            problems.append(f"{name}: the step must be positive (got {self.step:g}).")
        return problems

    def values_to_check(self) -> list[Any]:
        """The values whose configs must validate: a range's ends, or every choice."""
        return list(self.choices) if not self.is_range else [self.low, self.high]

    def grid_values(self) -> list[Any] | None:
        """Every value this dimension can take, or None where there are infinitely many (an unstepped float
        range, a log range)."""
        if not self.is_range:
            return list(self.choices)
        if FIELD_TYPES[self.name] is int and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step and not self.log:
            count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            return [round(self.low + i * self.step, 12) for i in range(count)]
        return None

    def suggest(self, trial: Any) -> Any:
        """This dimension's value for an Optuna trial."""
        if not self.is_range:
            return trial.suggest_categorical(self.name, list(self.choices))
        if FIELD_TYPES[self.name] is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        if not self.is_range:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, **({"log": True} if self.log else {}),
                **({"step": self.step} if self.step else {})}

    @classmethod
    def from_value(cls, name: str, value: Any) -> "Dimension":
        """From a file's entry: {"low", "high", "log", "step"}, {"choices": [...]}, a list, or one value."""
        if name not in FIELD_TYPES:
            return cls(name, choices=())  # problems() names the unknown field
        if isinstance(value, dict):
            unknown = set(value) - {"low", "high", "log", "step", "choices"}
            if unknown:
                raise ValueError(f"{name}: unknown keys {', '.join(sorted(unknown))} (use low, high, log, step or "
                                 "choices).")
            if "choices" in value:
                return cls(name, choices=tuple(parse_value(name, c) for c in value["choices"]))
            if FIELD_TYPES[name] in (bool, str):
                return cls(name, low=0, high=0)  # problems() says to list its values
            ends = [parse_value(name, value[k]) if k in value else None for k in ("low", "high")]
            step = parse_value(name, value["step"]) if value.get("step") is not None else None
            return cls(name, low=ends[0], high=ends[1], log=bool(value.get("log", False)), step=step)
        values = value if isinstance(value, list) else [value]
        return cls(name, choices=tuple(parse_value(name, v) for v in values))

    @classmethod
    def from_flag(cls, text: str) -> "Dimension":
        """`name=low:high[:log|:step=S]` for a range, `name=a,b,c` for choices, `name=v` for one fixed value."""
        name, sep, spec = text.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not spec.strip():
            raise ValueError(f"--vary {text!r}: write name=low:high[:log] or name=a,b,c.")
        if name not in FIELD_TYPES:
            return cls(name, choices=())  # problems() names the unknown field
        if ":" not in spec:
            return cls(name, choices=tuple(parse_value(name, v) for v in spec.split(",") if v.strip()))
        low, high, *options = spec.split(":")
        if FIELD_TYPES[name] in (bool, str):
            return cls(name, low=0, high=0)  # problems() says to list its values
        log, step = False, None
        for option in options:
            option = option.strip().lower()
            if option == "log":
                log = True
            elif option.startswith("step="):
                step = parse_value(name, option.removeprefix("step="))
            else:
                raise ValueError(f"--vary {text!r}: unknown option {option!r} (log or step=N).")
        return cls(name, low=parse_value(name, low), high=parse_value(name, high), log=log, step=step)


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def problems(self, base: TrainConfig) -> list[str]:
        """Why this space cannot run from `base`, one sentence each; empty when it can. Each range's ends and
        each choice must make a config that validates (a non-positive learning rate, K above 16, ...)."""
        if not self.dimensions:
            return ["the search space is empty: vary at least one hyperparameter (e.g. lr=1e-4:1e-2:log)."]
        shared = base.validate()
        problems = [f"the sweep's base configuration: {problem}" for problem in shared]
        names = self.names
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{name} is given twice in the search space.")
        for dim in self.dimensions:
            own = dim.problems()
            problems += own
            if own:
                continue
            for value in dim.values_to_check():
                problems += [f"{dim.name} = {_shown(value)}: {problem}"
                             for problem in base.replace(**{dim.name: value}).validate() if problem not in shared]
        return problems + ([] if problems else self.hardest_point_problems(base))

    def hardest_point_problems(self, base: TrainConfig) -> list[str]:
        """What fails where the rules that join fields bind hardest (the largest network, the longest warm-up in
        the shortest run): refused before the sweep starts, not when a trial happens to sample it."""
        point = {d.name: HARDEST[d.name](d.values_to_check()) for d in self.dimensions if d.name in HARDEST}
        if len(point) < 2:
            return []  # one such field alone was checked at both its ends above
        where = ", ".join(f"{name} = {_shown(value)}" for name, value in point.items())
        return [f"at the space's hardest point ({where}): {problem}" for problem in base.replace(**point).validate()]

    def check(self, base: TrainConfig) -> "SearchSpace":
        problems = self.problems(base)
        if problems:
            raise SpaceError(problems)
        return self

    def grid(self) -> dict[str, list[Any]] | None:
        """Every point of a finite space as {name: values}; None when a dimension is continuous."""
        values = {d.name: d.grid_values() for d in self.dimensions}
        return None if any(v is None for v in values.values()) else values

    def grid_problems(self) -> list[str]:
        """Why grid search cannot cover this space; empty when it can."""
        continuous = [d.name for d in self.dimensions if d.grid_values() is None]
        if continuous:
            return [f"grid search needs a finite space: {', '.join(continuous)} "
                    f"{'is a continuous range' if len(continuous) == 1 else 'are continuous ranges'}; list its "
                    "values or give a linear range a step (or choose the TPE or random sampler)."]
        if self.grid_size() > MAX_GRID:
            return [f"the grid has {self.grid_size():,} points, more than {MAX_GRID:,}: list fewer values."]
        return []

    def grid_size(self) -> int:
        grid = self.grid()
        return math.prod(len(v) for v in grid.values()) if grid is not None else 0

    def suggest(self, trial: Any) -> dict[str, Any]:
        return {d.name: d.suggest(trial) for d in self.dimensions}

    def to_dict(self) -> dict[str, Any]:
        return {d.name: d.to_dict() for d in self.dimensions}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SearchSpace":
        try:
            return cls(tuple(Dimension.from_value(name, value) for name, value in values.items()))
        except ValueError as error:
            raise SpaceError([str(error)]) from None

    @classmethod
    def from_flags(cls, flags: list[str]) -> "SearchSpace":
        try:
            return cls(tuple(Dimension.from_flag(flag) for flag in flags))
        except ValueError as error:
            raise SpaceError([str(error)]) from None

    @classmethod
    def from_file(cls, path: str | Path) -> "SearchSpace":
        """A JSON or TOML file (by its suffix) of {field: {low, high, log, step} | {choices} | [values]}."""
        path = Path(path)
        try:
            text = path.read_text()
            values = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except OSError as error:
            raise SpaceError([f"cannot read the search space file {path}: {error.strerror or error}."]) from None
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
            raise SpaceError([f"{path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: "
                              f"{error}."]) from None
        if not isinstance(values, dict):
            raise SpaceError([f"{path} must hold a table of field names (e.g. {{\"lr\": {{\"low\": 1e-4, ...}}}})."])
        return cls.from_dict(values)


# Where a search of each field usually starts: what the Sweeps page fills in when a field is picked.
SUGGESTED: dict[str, Dimension] = {d.name: d for d in (
    Dimension("lr", low=1e-4, high=1e-2, log=True),
    Dimension("weight_decay", low=1e-6, high=1e-3, log=True),
    Dimension("batch_size", choices=(64, 128, 256)),
    Dimension("width", choices=(8, 16, 32)),
    Dimension("k", choices=(1, 2, 4)),
    Dimension("blocks", choices=(5, 8, 11)),
    Dimension("label_smoothing", low=0.0, high=0.2),
    Dimension("augment", choices=(True, False)),
    Dimension("cutout", choices=(0, 8, 16)),
    Dimension("schedule", choices=("none", "cosine", "onecycle")),
    Dimension("optimizer", choices=("adam", "adamw", "sgd")),
    Dimension("epochs", choices=(3, 5)),
    Dimension("momentum", low=0.8, high=0.99),
    Dimension("warmup_epochs", low=0.0, high=1.0),
    Dimension("attn_temperature", low=1.0, high=30.0, log=True),
)}


def suggested(name: str, base: TrainConfig) -> Dimension:
    """A starting dimension for `name`: SUGGESTED's, else the base value's neighbourhood or both settings."""
    if name in SUGGESTED:
        return SUGGESTED[name]
    value, kind = getattr(base, name), FIELD_TYPES[name]
    if kind is bool:
        return Dimension(name, choices=(True, False))
    if kind is str:
        return Dimension(name, choices=(value,))
    if kind is int:
        return Dimension(name, low=max(0, value // 2), high=max(1, value * 2))
    return Dimension(name, low=value / 2, high=value * 2 if value else 1.0)
