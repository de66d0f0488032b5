"""Sweeps: a hyperparameter search on Optuna, started, watched and stopped here (cifar_app.sweeps).

Trials train in worker processes (`python -m cifar_app.sweep work`), never in this server: a crashing or killed
trial cannot take the app down, and workers go on training across an app restart. The study lives in the
sweep storage (a journal file in the runs folder, or $CIFAR_SWEEP_STORAGE), so the page finds every sweep
again after a restart, including those started from a terminal or on other machines. Every trial is an
ordinary run: the table links to it on the Runs and Evaluate pages.
"""

from __future__ import annotations

import os
import time

import pandas as pd
import streamlit as st

from cifar_app.sweeps import claims as sweep_claims
from cifar_app.sweeps import spec as sweep_spec
from cifar_app.sweeps import views as sweep_views
from cifar_app.sweeps import worker as sweep_worker
from ui.charts import sweeps as sweep_charts
from cifar_app.config import OPTIMIZERS, PRESETS, SCHEDULES, TrainConfig, preset
from cifar_app import device
from cifar_app.device import pick_device
from cifar_app.sweeps.space import (
    Dimension, FIELD_TYPES, SearchSpace, SWEEPABLE, param_column, parse_value, suggested,
)
from cifar_app.sweeps.spec import SweepSpec
from cifar_app.sweeps.storage import SweepError, SweepStorage
from ui import common

LIVE_S = 2.0  # while trials train: redraw the table and the charts
WATCH_S = 5.0  # otherwise: look for a worker (here or elsewhere) that starts a trial
VIEW_KEY, PICK_KEY, NOTICE_KEY = "sweeps_view", "sweep_pick", "sweep_notice"
VIEWS = ["Watch", "New sweep"]
DEFAULT_FIELDS = ["lr", "weight_decay", "batch_size"]
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}
LIVE_PHASES = ("running", "stopping")
SAMPLER_HELP = ("TPE models which values did well and samples near them (after a few random trials); random "
                "samples uniformly; grid tries every combination of a finite space.")
PRUNER_HELP = ("Stops a poor trial after an epoch whose validation accuracy is below what the earlier trials had "
               "at that epoch (median), or keeps only the best of each bracket (Hyperband). Its run stays, "
               "resumable.")
TABLE_COLUMNS = {
    "trial": st.column_config.NumberColumn("trial", format="%d"),
    "state": st.column_config.TextColumn("state", help="running, complete, pruned (stopped early by the pruner) "
                                                       "or failed (with its reason)"),
    "val_acc": st.column_config.NumberColumn("final val acc", format="%.2f%%",
                                             help="validation accuracy at the trial's last epoch: the objective (a "
                                                  "running trial: at its latest epoch; a pruned one: at the epoch it "
                                                  "was stopped)"),
    "epochs": st.column_config.TextColumn("trained", help="epochs done / planned"),
    "seconds": st.column_config.NumberColumn("time", format="%.0f s"),
    "reason": st.column_config.TextColumn("reason", width="large"),
    "run": st.column_config.TextColumn("run", help="the trial's run folder: open it on the Runs page below"),
}


@st.cache_resource(show_spinner=False)
def _storage(runs_dir: str, url: str | None) -> SweepStorage:
    return SweepStorage(runs_dir, url)


def sweep_storage() -> SweepStorage:
    """One storage per server process (the journal is read incrementally), in the runs folder the app uses."""
    return _storage(str(common.runs_store().root.resolve()), os.environ.get("CIFAR_SWEEP_STORAGE") or None)


@st.cache_resource(show_spinner=False)
def gpu_count() -> int:
    return device.gpu_count()


@st.cache_data(show_spinner=False, max_entries=16)
def cached_importances(storage: str, name: str, complete: int, _study) -> tuple[dict[str, float], str]:
    """Importances once per new complete trial (the live view redraws every few seconds)."""
    return sweep_views.importances(_study)


# -- a new sweep ------------------------------------------------------------------------------------------


def dimension_editor(name: str, base: TrainConfig) -> Dimension:
    """One varied field's widgets: a range (linear or log, with a step for grid search) or a list of values."""
    start, kind, key = suggested(name, base), FIELD_TYPES[name], f"sweep_dim_{name}"
    label, kind_col, *value_cols = st.columns([1.3, 1.6, 1, 1, 1], vertical_alignment="bottom")
    label.markdown(f"**{name}**")
    if kind in (bool, str):
        options = [True, False] if kind is bool else list(CHOICES.get(name, start.choices))
        with kind_col:
            st.caption("values")
        chosen = value_cols[0].multiselect(name, options, default=list(start.choices), key=key + "_choices",
                                           label_visibility="collapsed")
        return Dimension(name, choices=tuple(chosen))
    modes = ["range", "log range", "values"]
    default = "values" if not start.is_range else ("log range" if start.log else "range")
    mode = kind_col.segmented_control(name, modes, default=default, key=key + "_mode", required=True,
                                      label_visibility="collapsed")
    if mode == "values":
        shown = ", ".join(str(c) for c in start.choices) if not start.is_range else f"{start.low}, {start.high}"
        text = value_cols[0].text_input("values", value=shown, key=key + "_values", help="comma-separated")
        try:
            return Dimension(name, choices=tuple(parse_value(name, v) for v in text.split(",") if v.strip()))
        except ValueError as error:
            st.caption(f":red[{error}]")
            return Dimension(name, choices=())
    number = int if kind is int else float
    ends = start.values_to_check() if start.is_range else [min(start.choices), max(start.choices)]
    fmt = "%d" if kind is int else "%g"
    low = value_cols[0].number_input("low", value=number(ends[0]), key=key + "_low", format=fmt)
    high = value_cols[1].number_input("high", value=number(ends[-1]), key=key + "_high", format=fmt)
    step = None
    if mode == "range":
        step = value_cols[2].number_input("step", value=number(1 if kind is int else 0), min_value=number(0),
                                          key=key + "_step", format=fmt,
                                          help="0 = any value in the range; a step makes it finite (grid search)")
    return Dimension(name, low=low, high=high, log=mode == "log range", step=step or None)


def start_sweep(spec: SweepSpec, workers: int) -> None:
    """Create the study and start its workers; then watch it (a button's callback, before the page draws)."""
    storage = sweep_storage()
    try:
        study = sweep_spec.create_sweep(spec, storage)
        sweep_worker.start_workers_here(study, spec, storage, workers, gpu_count())
    except SweepError as error:
        st.session_state[NOTICE_KEY] = ("error", str(error))
        return
    st.session_state[PICK_KEY] = spec.name
    st.session_state[VIEW_KEY] = "Watch"
    st.session_state[NOTICE_KEY] = ("success", f"Started sweep **{spec.name}** with {workers} worker "
                                               f"process{'es' if workers > 1 else ''}.")


def new_sweep_form() -> None:
    gpus = gpu_count()
    top = st.columns([2, 3, 2])
    name = top[0].text_input("Sweep name", value=time.strftime("sweep-%m%d-%H%M"), key="sweep_name", max_chars=60)
    default_preset = "seed" if pick_device("auto").type != "cpu" else "quick"
    preset_name = top[1].segmented_control("Every trial starts from", list(PRESETS), default=default_preset,
                                           key="sweep_preset", required=True,
                                           help="the preset's hyperparameters, except those the search varies")
    trials = top[2].number_input("Trials", 1, 1000, 20, key="sweep_trials",
                                 help="the budget: trials in all, over every worker (a grid runs at most its size)")
    split = st.columns(4)
    val_size = split[0].number_input("Validation split (images)", 0, 25_000, sweep_spec.DEFAULT_VAL_SIZE, step=1000,
                                     key="sweep_val_size", help="held out of training; the objective is accuracy "
                                                                "on it, the same images for every trial")
    subset = split[1].number_input("Training subset (0 = all)", 0, 50_000, 0, step=1000, key="sweep_subset",
                                   help="train each trial on this many images: a quicker, rougher search")
    searched = "epochs" in st.session_state.get("sweep_fields", DEFAULT_FIELDS)
    epochs = split[2].number_input("Epochs per trial", 1, 200, preset(preset_name).epochs, key="sweep_epochs",
                                   disabled=searched, help="searched below" if searched else
                                   "how long each trial trains (or search epochs below)")
    workers = split[3].number_input("Trials at once", 1, max(1, gpus or os.cpu_count() or 1), 1, key="sweep_workers",
                                    help=f"worker processes started here: one per GPU ({gpus} here)" if gpus else
                                    "worker processes started here; on a CPU they share its cores, so one is "
                                    "usually fastest. Other machines can add workers with the CLI.")
    choose = st.columns(2)
    sampler = choose[0].segmented_control("Sampler", list(sweep_spec.SAMPLERS), default="tpe", key="sweep_sampler",
                                          required=True, help=SAMPLER_HELP)
    pruner = choose[1].segmented_control("Early stopping of poor trials", list(sweep_spec.PRUNERS), default="median",
                                         key="sweep_pruner", required=True, help=PRUNER_HELP)
    base = preset(preset_name, data_dir=common.data_dir(), epochs=int(epochs))
    fields = st.multiselect("Hyperparameters to search", list(SWEEPABLE), default=DEFAULT_FIELDS,
                            key="sweep_fields", help="each gets a range or a list of values below; the others "
                                                     "keep the preset's values")
    dims = tuple(dimension_editor(field, base) for field in fields)
    spec = SweepSpec.from_preset(name.strip(), preset_name, SearchSpace(dims), data_dir=common.data_dir(),
                                 val_size=int(val_size), train_subset=int(subset), trials=int(trials),
                                 sampler=sampler, pruner=pruner, workers=int(workers),
                                 settings={"epochs": int(epochs)})
    problems = spec.problems()
    if problems:
        st.error("Cannot start yet:\n" + "\n".join(f"- {p}" for p in problems), icon=":material/block:")
    else:
        st.caption(" · ".join(line.strip() for line in spec.describe()))
    st.button("Start sweep", key="sweep_start", type="primary", icon=":material/play_arrow:",
              disabled=bool(problems), on_click=start_sweep, args=(spec, int(workers)))


# -- watching a sweep -------------------------------------------------------------------------------------


def go_on(name: str) -> None:
    """"Go on": see that the sweep's workers run here, starting only those missing (a second tab, or a second
    app on this machine, starts none), and clear its stop flag (a button's callback)."""
    try:
        study, spec = sweep_spec.load_sweep(name, sweep_storage())
        started = sweep_worker.start_workers_here(study, spec, sweep_storage(), spec.workers, gpu_count())
    except SweepError as error:
        st.session_state[NOTICE_KEY] = ("error", str(error))
        return
    st.session_state[NOTICE_KEY] = ("success", f"Started {started} worker process{'es' if started != 1 else ''} for "
                                               f"**{name}**." if started else
                                    f"**{name}** already has {spec.workers} worker(s) running on this machine.")


def controls(study, spec: SweepSpec, state: sweep_views.SweepState) -> None:
    """Stop; or, with budget left, start workers here to go on (those started here and still loading are shown)."""
    here = sweep_worker.workers_here(study)
    if state.phase in ("running", "waiting") and st.button("Stop sweep", key="sweep_stop", icon=":material/stop:",
                                                           help="every worker ends its trial within one batch and "
                                                                "takes no more; the trials' runs stay"):
        sweep_spec.request_stop(study)
        st.rerun()
    if state.phase in ("waiting", "stopped") and state.done < state.budget:
        if here and state.phase == "waiting":
            st.caption(f":material/hourglass_top: {len(here)} worker(s) started on this machine are loading…")
        else:
            st.button(f"Go on with {spec.workers} worker(s) here", key="sweep_resume", icon=":material/play_arrow:",
                      help="start worker processes on this machine for the trials left", on_click=go_on,
                      args=(spec.name,))


def headline(study, spec: SweepSpec, state: sweep_views.SweepState) -> None:
    st.progress(min(1.0, state.done / max(1, state.budget)), text=state.line())
    cols = st.columns(4)
    cols[0].metric("Trials done", f"{state.done} of {state.budget}")
    best = state.best
    cols[1].metric("Best validation accuracy", f"{best.value:.2f}%" if best else "–",
                   help="the objective: the best trial's validation accuracy at its last epoch")
    test = best.user_attrs.get("test_acc") if best else None
    cols[2].metric("Its test accuracy", f"{test:.2f}%" if test is not None else "–",
                   help="the best trial's test accuracy, measured once, at its last epoch: it chose nothing")
    cols[3].metric("Best trial", f"#{best.number}" if best else "–")
    st.caption(" · ".join(line.strip() for line in spec.describe()) + f" · stored in {sweep_storage().describe()}")


def trial_links(row: pd.Series) -> None:
    state = row["state"] + (f": {row['reason']}" if row["reason"] else "")
    st.markdown(f"**Trial {row['trial']}** · {state}")
    if row["run"]:
        links = st.columns(3)
        links[0].page_link("app_pages/runs.py", label="Open its run", icon=":material/history:",
                           query_params={"run": row["run"]})
        links[1].page_link("app_pages/evaluate.py", label="Evaluate it", icon=":material/grid_on:",
                           query_params={"run": row["run"]})
        links[2].caption(f"run `{row['run']}`")


def charts(study, spec: SweepSpec, frame: pd.DataFrame, state: sweep_views.SweepState, selected: int | None) -> None:
    left, right = st.columns(2)
    with left.container(key="sweep_best_chart"):
        st.altair_chart(sweep_charts.best_so_far_chart(frame), width="stretch")
    with right.container(key="sweep_parallel_chart"):
        lines, ticks = sweep_charts.parallel_frames(frame, list(spec.space.dimensions))
        st.altair_chart(sweep_charts.parallel_chart(lines, ticks, spec.space.names), width="stretch")
    left, right = st.columns(2)
    with left.container(key="sweep_importances"):
        found, why = cached_importances(sweep_storage().describe(), spec.name, state.counts.get("complete", 0), study)
        if found:  # its height given: a chart that replaces the caption in place kept the caption's height
            st.altair_chart(sweep_charts.importance_chart(found), width="stretch",
                            height=sweep_charts.importance_height(len(found)))
        else:
            st.markdown("**Hyperparameter importances**")
            st.caption(why)
    with right.container(key="sweep_curves"):
        curves = pd.DataFrame(sweep_views.learning_curves(study), columns=["trial", "epoch", "val_acc", "state"])
        st.altair_chart(sweep_charts.curves_chart(curves, state.best.number if state.best else None, selected),
                        width="stretch")


def live_view(name: str, live: bool) -> None:
    """The sweep's state, controls, trials table and charts; redrawn every few seconds by its fragment."""
    try:
        study, spec = sweep_spec.load_sweep(name, sweep_storage())
        with sweep_storage().reachable():
            sweep_claims.look_after(study, sweep_storage())  # the heartbeat (database) or the pid rule (journal)
            state = sweep_views.sweep_state(study, spec)
            rows = sweep_views.trial_rows(study, spec)
    except SweepError as error:
        st.error(str(error), icon=":material/cloud_off:")
        return
    if (state.phase in LIVE_PHASES) != live:
        st.rerun()  # started or ended: redraw the page, which sets the refresh rate
    headline(study, spec, state)
    controls(study, spec, state)
    if not rows:
        st.info("No trial yet: the workers load the data and claim the first trials.", icon=":material/hourglass_top:")
        return
    frame = pd.DataFrame(rows)
    params = {param_column(n): st.column_config.Column(n) for n in spec.space.names}
    shown = frame[["trial", "state", "val_acc", "epochs", "seconds", *params, "reason", "run"]]
    event = st.dataframe(shown, hide_index=True, key=f"sweep_trials_{name}", column_config={**TABLE_COLUMNS, **params},
                         on_select="rerun", selection_mode="single-row", placeholder="")  # not known yet: blank
    picked = event.selection.rows if event is not None else []
    selected = int(shown.iloc[picked[0]]["trial"]) if picked else None
    focus = selected if selected is not None else (state.best.number if state.best else None)
    if focus is not None:
        trial_links(frame[frame["trial"] == focus].iloc[0])
    st.caption("Select a trial in the table to see its links and draw its curve in red; the best trial's is black.")
    charts(study, spec, frame, state, selected)


def watch_section() -> None:
    try:
        names = sweep_spec.list_sweeps(sweep_storage())
    except SweepError as error:
        st.error(str(error))
        return
    if not names:
        st.info("No sweep yet: start one under **New sweep**, or from a terminal with "
                "`python -m cifar_app.sweep run NAME --vary lr=1e-4:1e-2:log --trials 20`.", icon=":material/info:")
        return
    asked = st.query_params.get("sweep")
    if asked in names:
        st.session_state[PICK_KEY] = asked
        del st.query_params["sweep"]
    if st.session_state.get(PICK_KEY) not in names:
        st.session_state[PICK_KEY] = names[0]
    name = st.selectbox("Sweep", names, key=PICK_KEY, help="every sweep in the storage, newest first")
    try:
        study, spec = sweep_spec.load_sweep(name, sweep_storage())
        with sweep_storage().reachable():
            live = sweep_views.sweep_state(study, spec).phase in LIVE_PHASES
    except SweepError as error:
        st.error(str(error), icon=":material/cloud_off:")
        return
    st.fragment(live_view, run_every=LIVE_S if live else WATCH_S)(name, live)


# -- the page ---------------------------------------------------------------------------------------------

st.title("Sweeps", anchor=False)
st.caption("A sweep trains many runs and lets Optuna choose each one's hyperparameters from what the earlier ones "
           "scored on the validation split. Trials train in worker processes, never in this app; each is an "
           "ordinary run on the Runs page. Add workers on other machines with `python -m cifar_app.sweep work NAME` "
           "(see the README).")
notice = st.session_state.pop(NOTICE_KEY, None)
if notice:
    getattr(st, notice[0])(notice[1])
if VIEW_KEY not in st.session_state:
    try:
        st.session_state[VIEW_KEY] = VIEWS[0] if sweep_spec.list_sweeps(sweep_storage()) else VIEWS[1]
    except SweepError:
        st.session_state[VIEW_KEY] = VIEWS[0]  # where the storage's error is shown
view = st.segmented_control("View", VIEWS, key=VIEW_KEY, required=True, label_visibility="collapsed")
if view == "New sweep":
    new_sweep_form()
else:
    watch_section()
