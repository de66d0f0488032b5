"""A sweep's specification and its study: the preset-based config every trial starts from, the search space
(sweeps/space.py), the budget, the sampler (TPE, random, grid), the pruner (none, median, Hyperband) and the
heartbeat of a database storage. The spec lives in the study's user attributes, so any worker on any machine reads
the same. Creating, finding and stopping a sweep.

The objective is a trial's validation accuracy at its last epoch (a validation split is required): every epoch is
validated and reported to the pruner, and each trial is tested once, at its end, so that its run's best epoch and
best.pt are the epoch the objective comes from.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from cifar_app.config import TrainConfig, preset
from cifar_app.data.formats import data_status
from cifar_app.sweeps.space import SearchSpace
from cifar_app.sweeps.storage import SweepError, SweepStorage


SAMPLERS = ("tpe", "random", "grid")


PRUNERS = ("none", "median", "hyperband")


DEFAULT_VAL_SIZE = 5000


HEARTBEAT_S, GRACE_S = 10, 60  # a worker killed, or cut off from the database, for a minute: its trial is re-run


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")


STATE_NAMES = {TrialState.RUNNING: "running", TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
               TrialState.FAIL: "failed", TrialState.WAITING: "waiting"}


@dataclass
class SweepSpec:
    """Everything a worker needs to run a sweep's trials, kept in the study so every worker reads the same."""

    name: str
    base: TrainConfig
    space: SearchSpace
    trials: int = 20
    sampler: str = "tpe"
    pruner: str = "median"
    workers: int = 1  # how many trials run at once on the machine that starts the sweep
    prune_startup: int = 3  # trials that run to the end before the median pruner judges any
    created: float = field(default_factory=time.time)
    heartbeat_s: int = HEARTBEAT_S  # a database storage: each worker's trial heartbeat, on the database's clock
    grace_s: int = GRACE_S  # ... and how long a trial's heartbeat may be silent before it is failed and re-run

    @property
    def budget(self) -> int:
        """How many trials the sweep runs: `trials`, or fewer when a grid has fewer points."""
        return min(self.trials, self.space.grid_size()) if self.sampler == "grid" else self.trials

    def max_epochs(self) -> int:
        dims = [d for d in self.space.dimensions if d.name == "epochs"]
        return int(max(dims[0].values_to_check())) if dims else self.base.epochs

    @property
    def heartbeat(self) -> tuple[int, int]:
        return self.heartbeat_s, self.grace_s

    def problems(self) -> list[str]:
        """Why this sweep cannot start, one sentence each; empty when it can."""
        problems = []
        if not NAME_PATTERN.match(self.name):
            problems.append(f"sweep name {self.name!r}: use 1 to 60 letters, digits, '-', '_' or '.', starting with "
                            "a letter or digit.")
        if not 1 <= self.trials <= 10_000:
            problems.append(f"the number of trials must be between 1 and 10000 (got {self.trials}).")
        if not 1 <= self.workers <= 64:
            problems.append(f"workers (trials at once) must be between 1 and 64 (got {self.workers}).")
        if self.sampler not in SAMPLERS:
            problems.append(f"sampler must be one of {', '.join(SAMPLERS)} (got {self.sampler!r}).")
        if self.pruner not in PRUNERS:
            problems.append(f"pruner must be one of {', '.join(PRUNERS)} (got {self.pruner!r}).")
        if self.prune_startup < 0:
            problems.append(f"the pruner's startup trials cannot be negative (got {self.prune_startup}).")
        if self.pruner == "hyperband" and "epochs" in self.space.names:
            problems.append("Hyperband already decides how many epochs each trial trains (its budget): search epochs "
                            "with the median pruner (it compares trials of the same length) or with none.")
        if self.heartbeat_s < 1 or self.grace_s < 2 * self.heartbeat_s:
            problems.append(f"the heartbeat must be at least 1 s and the grace period at least twice it (got "
                            f"{self.heartbeat_s} s and {self.grace_s} s).")
        if self.base.val_size <= 0:
            problems.append(f"a sweep compares trials on validation accuracy: hold out a validation split "
                            f"(val_size above 0; {DEFAULT_VAL_SIZE} is the default).")
        space_problems = self.space.problems(self.base)
        problems += space_problems
        if self.sampler == "grid" and not space_problems:
            problems += self.space.grid_problems()
        return problems

    def check(self) -> "SweepSpec":
        problems = self.problems()
        if problems:
            raise SweepError("The sweep cannot start:\n  - " + "\n  - ".join(problems))
        return self

    @classmethod
    def from_preset(cls, name: str, preset_name: str, space: SearchSpace, *, data_dir: str,
                    val_size: int = DEFAULT_VAL_SIZE, train_subset: int = 0, records: bool = False,
                    settings: dict[str, Any] | None = None, **options: Any) -> "SweepSpec":
        """A sweep whose trials start from a preset, on the same split (`val_size` held out, `train_subset` of
        the rest), with `settings` for every trial. Unless `settings` says otherwise, each trial keeps no
        per-image record (a few MB a trial)."""
        base = preset(preset_name, **{"data_dir": str(Path(data_dir).resolve()), "val_size": val_size,
                                      "train_subset": train_subset, "records": records, **(settings or {})})
        return cls(name, base, space, **options)

    def trial_config(self, params: dict[str, Any], number: int) -> TrainConfig:
        """A trial's config: the base with its sampled values, tested once, at its last epoch (the test set
        chooses nothing; its best epoch by validation is then its last, the objective's)."""
        config = self.base.replace(**params, name=f"{self.name}-t{number}")
        return config.replace(eval_every=config.epochs)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base.to_dict(), "space": self.space.to_dict(), "trials": self.trials,
                "sampler": self.sampler, "pruner": self.pruner, "workers": self.workers,
                "prune_startup": self.prune_startup, "created": self.created, "heartbeat_s": self.heartbeat_s,
                "grace_s": self.grace_s}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SweepSpec":
        return cls(**{**values, "base": TrainConfig.from_dict(values["base"]),
                      "space": SearchSpace.from_dict(values["space"])})

    def describe(self) -> list[str]:
        length = " of each length" if "epochs" in self.space.names else ""
        pruner = {"none": "no pruning", "median": f"median pruner (after {self.prune_startup} full trials{length})",
                  "hyperband": "Hyperband pruner"}[self.pruner]
        return [f"{self.budget} trials, {self.sampler} sampler, {pruner}, objective: validation accuracy at each "
                f"trial's last epoch, on {self.base.val_size:,} held-out images",
                *[f"  {d.describe()}" for d in self.space.dimensions]]


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, except that it leaves ending the sweep to the budget: its own `study.stop()`
    works only inside `study.optimize`, and the workers here ask and tell."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D102 (Optuna's signature)
        pass


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.sampler == "grid":
        return _GridSampler(spec.space.grid(), seed=spec.base.seed)  # the same grid order in every worker
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler()  # unseeded: seeded workers would all draw the same points
    # TPE's first trials are random: a third of the budget, 3 to 10. constant_liar spreads parallel workers.
    startup = max(3, min(10, spec.budget // 3))
    return optuna.samplers.TPESampler(n_startup_trials=startup, constant_liar=True)


class _SameLength:
    """The study as a pruner sees it: only the trials planned for as many epochs as the one it judges."""

    def __init__(self, study: optuna.Study, epochs: int, default: int):
        self.study, self.epochs, self.default = study, epochs, default
        self.direction = study.direction

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=deepcopy, states=states)
                if t.params.get("epochs", self.default) == self.epochs]


class SameLengthPruner(optuna.pruners.BasePruner):
    """A pruner that compares like with like when `epochs` is searched: a trial at epoch 3 of 5 (a one-cycle
    schedule still near its peak) is judged against trials planned for 5 epochs, never against 3-epoch trials'
    annealed finals."""

    def __init__(self, inner: optuna.pruners.BasePruner, default_epochs: int):
        self.inner, self.default = inner, default_epochs

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        epochs = trial.params.get("epochs", self.default)
        return self.inner.prune(_SameLength(study, epochs, self.default), trial)  # type: ignore[arg-type]


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        median = optuna.pruners.MedianPruner(n_startup_trials=spec.prune_startup, n_warmup_steps=0)
        return SameLengthPruner(median, spec.base.epochs) if "epochs" in spec.space.names else median
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, spec.max_epochs()),
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO and warns about experimental features: the CLI and page say it better."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def create_sweep(spec: SweepSpec, storage: SweepStorage) -> optuna.Study:
    """Check the spec, the data and the storage, then create the study. Raises SweepError before anything is
    written when any of them is wrong, or when a sweep of that name exists."""
    spec.check()
    found, root = data_status(spec.base.data_dir)
    if found is None:
        raise SweepError(f"no CIFAR-10 under {root}: point --data-dir (or the sidebar's data folder) at a copy.")
    quiet_optuna()
    backend = storage.open()
    try:
        with storage.reachable():
            study = optuna.create_study(study_name=spec.name, storage=backend, direction="maximize",
                                        sampler=make_sampler(spec), pruner=make_pruner(spec))
            study.set_user_attr("spec", spec.to_dict())
            study.set_user_attr("stop", False)
    except optuna.exceptions.DuplicatedStudyError:
        raise SweepError(f"a sweep named {spec.name!r} already exists in {storage.describe()}: choose another "
                         f"name, or add workers to it with `python -m cifar_app.sweep work {spec.name}`.") from None
    return study


def load_sweep(name: str, storage: SweepStorage) -> tuple[optuna.Study, SweepSpec]:
    """The study and its spec, with the spec's sampler and pruner."""
    if not storage.has_studies():
        raise SweepError(f"no sweep named {name!r} in {storage.describe()}.")
    quiet_optuna()
    backend = storage.open()
    with storage.reachable():
        try:
            study_id = backend.get_study_id_from_name(name)
        except KeyError:
            raise SweepError(f"no sweep named {name!r} in {storage.describe()}.") from None
        attrs = backend.get_study_user_attrs(study_id)
        if "spec" not in attrs:
            raise SweepError(f"study {name!r} in {storage.describe()} was not made by this app (it has no sweep "
                             "spec).")
        spec = SweepSpec.from_dict(attrs["spec"])
        study = optuna.load_study(study_name=name, storage=storage.open(spec.heartbeat), sampler=make_sampler(spec),
                                  pruner=make_pruner(spec))
    return study, spec


def list_sweeps(storage: SweepStorage) -> list[str]:
    """The names of this app's sweeps in the storage, newest first."""
    if not storage.has_studies():
        return []
    quiet_optuna()
    with storage.reachable():
        studies = [s for s in storage.open().get_all_studies() if "spec" in s.user_attrs]
    return [s.study_name for s in sorted(studies, key=lambda s: s.user_attrs["spec"].get("created", 0), reverse=True)]


def stop_requested(study: optuna.Study) -> bool:
    return bool(study._storage.get_study_user_attrs(study._study_id).get("stop"))


def request_stop(study: optuna.Study, stop: bool = True) -> None:
    """Ask every worker to end its trial within one batch and take no more (or, with stop=False, to go on)."""
    study.set_user_attr("stop", stop)
