"""The Train page: every hyperparameter as a widget, presets, a model summary, Start/Stop and the live view.

The page never trains: Start hands the config to the process-wide job (ui.common.job_manager) and the
live view (ui.live_view) redraws a snapshot of it in a fragment about once a second while a run trains.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

import streamlit as st

from cifar_app.analysis import compare
from cifar_app.engine.budget import duration_text, estimate
from cifar_app.engine.schedule import CIFAR10_TEST_IMAGES, train_images
from cifar_app.engine.memory import check_memory
from cifar_app.engine.speed import estimate_seconds, recent_pace
from cifar_app.config import (
    DEVICES, IMPLS, OPTIMIZERS, PRECISIONS, PRESETS, RUNTIME_FIELDS, LABEL_FIELDS, SCHEDULES, ConfigError, TrainConfig,
    matching_preset, preset,
)
from cifar_app.data.formats import DataFormatError, DataNotFound, data_status
from cifar_app.device import DeviceError, available_devices, pick_device
from cifar_app.engine.jobs import JobBusy
from cifar_app.data.labels import LabelSetError, LabelStore, label_set_line
from cifar_app.store.lineage import ARCHITECTURE_FIELDS, fork_problems, fork_warnings
from cifar_app.shape import summarize_shape
from ui import common
from ui import live_view as live

PREFIX, FORM_FIELDS = common.FORM_PREFIX, common.FORM_FIELDS
FIELDS = {f.name: f.metadata for f in fields(TrainConfig)}  # each field's label and help text
PRESET_TEXT = {
    "seed": "seed: the coursework (25 epochs)",
    "quick": "quick: narrow, 3 epochs on a CPU",
    "5min": "5min: the quick network for 5 minutes, its epochs fitted to this machine's pace",
    "best": "best: the strongest 25-epoch recipe",
}
# The coursework's 25 epochs take about a minute on a GPU and many hours on a CPU: a CPU opens on `quick`.
DEFAULT_PRESET = "seed" if pick_device("auto").type != "cpu" else "quick"
DEFAULT_WHY = {"seed": "Opened on `seed`, the coursework's own recipe: this machine has a GPU.",
               "quick": "Opened on `quick`: this machine has no GPU, and the coursework's `seed` recipe would take "
                        "many hours on its CPU."}


def _grid(mantissas: tuple[float, ...], exponents: range, top: float) -> list[float]:
    return [v for e in exponents for m in mantissas if (v := float(f"{m}e{e}")) <= top]


LR_GRID = _grid((1, 1.5, 2, 3, 4, 5, 6, 8), range(-5, 1), 1.0)
WD_GRID = [0.0, *_grid((1, 2, 3, 5), range(-6, -1), 0.05)]
WIDTHS = [4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
BUDGETS = [0.0, *(60.0 * m for m in (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 360, 480, 720, 1440))]
BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]


sci, duration, config_line = common.sci, common.duration, common.config_line


def budget_text(seconds: float) -> str:
    return "off: the epochs below" if not seconds else duration_text(seconds)


# -- the form's state --------------------------------------------------------------------------------------


_typed = common.form_value


def init_form(config: TrainConfig) -> None:
    """Give every widget without a value the config's value (first visit; widgets keep theirs afterwards)."""
    for name in FORM_FIELDS:
        st.session_state.setdefault(PREFIX + name, _typed(name, getattr(config, name)))


def form_config() -> TrainConfig:
    values = {name: _typed(name, st.session_state[PREFIX + name]) for name in FORM_FIELDS}
    for name, value in values.items():
        if isinstance(value, float):
            values[name] = round(value, 10)  # 0.1 + 0.05 steps of a slider, not 0.15000000000000002
    return TrainConfig(data_dir=common.data_dir(), **values)


def apply_preset() -> None:
    """The preset control's callback: fill in every hyperparameter of the preset (not where/how it runs, and
    not the network's shape while setting up a fork, which loads its parent's weights)."""
    name = st.session_state.get("preset")
    keep = RUNTIME_FIELDS + LABEL_FIELDS + (ARCHITECTURE_FIELDS if st.session_state.get(common.FORK_KEY) else ())
    if name in PRESETS:
        chosen = preset(name)
        for field_name in FORM_FIELDS:
            if field_name not in keep:
                st.session_state[PREFIX + field_name] = getattr(chosen, field_name)


# -- widgets ----------------------------------------------------------------------------------------------

def _options(grid: list, name: str) -> list:
    """A widget's choices, with the current value added when a loaded config sits between grid points."""
    return sorted({*grid, st.session_state[PREFIX + name]})


def widget(name: str, kind: str, **kwargs: Any) -> None:
    common_args = dict(key=PREFIX + name, help=kwargs.pop("help", FIELDS[name]["help"]), persist_state="session")
    label = FIELDS[name]["label"]
    if kind == "slider":
        kwargs["max_value"] = max(kwargs["max_value"], st.session_state[PREFIX + name])
        st.slider(label, **kwargs, **common_args)
    elif kind == "number":
        st.number_input(label, **kwargs, **common_args)
    elif kind == "select_slider":
        st.select_slider(label, **kwargs, **common_args)
    elif kind == "select":
        st.selectbox(label, **kwargs, **common_args)
    elif kind == "check":
        st.checkbox(label, **kwargs, **common_args)
    elif kind == "text":
        st.text_input(label, **kwargs, **common_args)


def label_set_widget() -> None:
    """The training labels: the dataset's own, or a label set beside the data (its latest version, or the version
    the form was filled with)."""
    store, current = LabelStore(common.data_dir()), st.session_state[PREFIX + "labels"]
    options = ["", *store.names()]
    if current not in options:
        options.append(current)

    def text(value: str) -> str:
        if not value:
            return "the dataset's own labels"
        try:
            return label_set_line(store, value)
        except LabelSetError:
            return f"{value} (not beside this data)"

    widget("labels", "select", options=options, format_func=text)


def hyperparameter_widgets(forking: bool = False) -> None:
    """Every hyperparameter; a fork keeps its parent's network, so the shape widgets are locked then."""
    shape = {"disabled": True, "help": "a fork loads its parent's weights: the network's shape stays"} if forking else {}
    data_tab, model_tab, optim_tab, run_tab = st.tabs(["Data", "Model", "Optimisation", "Run"])
    with data_tab:
        widget("train_subset", "number", min_value=0, max_value=50_000, step=1000)
        widget("val_size", "number", min_value=0, max_value=25_000, step=1000)
        label_set_widget()
        folds_col, fold_col = st.columns(2)
        with folds_col:
            widget("folds", "number", min_value=0, max_value=20, step=1)
        with fold_col:
            widget("fold", "number", min_value=0, max_value=19, step=1, disabled=not st.session_state[PREFIX + "folds"])
        widget("augment", "check")
        widget("cutout", "slider", min_value=0, max_value=32, step=1)
        widget("download", "check")
    with model_tab:
        widget("blocks", "slider", min_value=1, max_value=30, step=1, **shape)
        widget("k", "slider", min_value=1, max_value=16, step=1, **shape)
        widget("width", "select_slider", options=_options(WIDTHS, "width"), **shape)
        widget("attn_temperature", "number", min_value=0.1, max_value=100.0, step=1.0, format="%.1f")
        widget("attn_anneal_epochs", "number", min_value=0, max_value=500, step=1)
        widget("zero_init_bn", "check")
    with optim_tab:
        widget("time_budget", "select_slider", options=_options(BUDGETS, "time_budget"), format_func=budget_text)
        budgeted = bool(st.session_state[PREFIX + "time_budget"])
        widget("epochs", "slider", min_value=1, max_value=100, step=1, disabled=budgeted,
               help="passes over the training set; with a time budget, the run fits its epochs to the budget "
                    "(the warm-up keeps its share of these)" if budgeted else FIELDS["epochs"]["help"])
        widget("batch_size", "select_slider", options=_options(BATCH_SIZES, "batch_size"))
        widget("optimizer", "select", options=OPTIMIZERS)
        widget("lr", "select_slider", options=_options(LR_GRID, "lr"), format_func=sci)
        widget("weight_decay", "select_slider", options=_options(WD_GRID, "weight_decay"), format_func=sci)
        widget("decay_all", "check")
        widget("momentum", "slider", min_value=0.0, max_value=0.99, step=0.01,
               disabled=st.session_state[PREFIX + "optimizer"] != "sgd")
        widget("schedule", "select", options=SCHEDULES)
        widget("warmup_epochs", "number", min_value=0.0, max_value=500.0, step=0.5, format="%.1f")
        widget("label_smoothing", "slider", min_value=0.0, max_value=0.5, step=0.05)
        widget("tta_flip", "check")
    with run_tab:
        widget("seed", "number", min_value=0, max_value=2**31 - 1, step=1)
        devices = available_devices()
        widget("device", "select", options=sorted({*devices, st.session_state[PREFIX + "device"]}, key=DEVICES.index))
        widget("impl", "select", options=IMPLS)
        widget("precision", "select", options=PRECISIONS)
        widget("threads", "number", min_value=0, max_value=max(64, os.cpu_count() or 1), step=1)
        widget("compile", "check")
        if "cuda" in devices:  # nothing to capture without a CUDA GPU
            widget("cuda_graphs", "check")
        widget("eval_every", "number", min_value=1, max_value=500, step=1)
        widget("records", "check")
        widget("name", "text", placeholder="generated from the date")


# -- the model summary ------------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=256)
def model_size(blocks: int, k: int, width: int) -> tuple[int, int]:
    """(parameters, multiply-adds per image) of the network these three numbers describe."""
    summary = summarize_shape(blocks, k, width)  # counted, not built: a slider can ask for billions
    return summary.params, summary.macs


def training_speed(config: TrainConfig, may_measure: bool) -> tuple[float | str | None, str]:
    """(images/s, where it comes from): the pace of the newest run of this speed that finished on this machine,
    else SpeedCache.speed's probe; an absent device is a sentence too."""
    try:
        device = pick_device(config.device)
    except DeviceError as error:
        return str(error), ""
    known = recent_pace(common.runs_store(), config, device)
    if known is not None:
        pace, run = known
        return pace, f"the pace of your run {run.name} on this machine, its evaluations included"
    return common.speed_cache().speed(config, device, may_measure), "measured on a few synthetic batches"


def model_summary(config: TrainConfig, job_running: bool) -> None:
    params, macs = model_size(config.blocks, config.k, config.width)
    columns = st.columns(3)
    columns[0].metric("Parameters", f"{params / 1e6:.2f} M", help="trainable weights of the network")
    columns[1].metric("Multiply-adds per image", f"{macs / 1e6:.0f} M",
                      help="one forward pass of one 32x32 image, counting the K convolutions of each block")
    slot = columns[2].empty()
    slot.metric("Time per epoch", "…", help="measuring the training speed of this model on this device")
    speed, source = training_speed(config, may_measure=not job_running)
    if not isinstance(speed, float):
        slot.metric("Time per epoch", "—", help=speed or "measured on this device when no run is training")
        if speed:
            st.caption(f"Time per epoch not measured: {speed.rstrip('.')}.")
        return
    epoch_s, run_s = estimate_seconds(config, speed)
    slot.metric("Time per epoch (rough)", f"≈ {duration(epoch_s)}",
                help=f"from {speed:,.0f} training images/s ({source}) on this device, plus the test pass")
    if config.time_budget:
        budget_forecast(config, speed, source)
        return
    st.caption(f"≈ {duration(run_s)} for {common.plural(config.epochs, 'epoch')} on {common.device_description()} "
               f"({speed:,.0f} training images/s, {source}).")


def budget_forecast(config: TrainConfig, speed: float, source: str) -> None:
    """What a time budget buys on this device, before Start (the run measures its own pace and keeps to it)."""
    fits = estimate(config, speed, train_images(config), CIFAR10_TEST_IMAGES)
    if isinstance(fits, str):
        st.warning(f"Probably too short: {fits}", icon=":material/timer_off:")
        return
    st.caption(f"Trains for {duration_text(config.time_budget)}: about {fits:.1f} epochs fit on "
               f"{common.device_description()} ({speed:,.0f} training images/s, {source}). The run measures its "
               "own pace when it starts, fits its one-cycle schedule to the steps that fit, and keeps to the budget "
               "as it goes.")


# -- forks ------------------------------------------------------------------------------------------------


def fork_source() -> tuple[Any, str, list[str], list[str]] | None:
    """(parent run, checkpoint, problems, warnings) while the form sets up a fork, else None."""
    source = st.session_state.get(common.FORK_KEY)
    if not source:
        return None
    try:
        parent = common.runs_store().get(source["run"])
    except KeyError:
        return None, source["which"], [f"the run to fork from ({source['name']}) is gone from the run store."], []
    config = form_config()
    return parent, source["which"], fork_problems(parent, source["which"], config), fork_warnings(parent, config, common.data_fingerprint())


def fork_banner() -> None:
    source = st.session_state[common.FORK_KEY]
    with st.container(border=True, key="fork_banner"):
        st.markdown(f":material/call_split: **Fork of {source['name']}** from its {source['which']} checkpoint "
                    f"(after epoch {source['epoch']})")
        st.caption(f"A new run that starts from those weights and numbers its epochs on from {source['epoch'] + 1}; "
                   "the optimizer and schedule start afresh with the values below. The network's shape stays.")
        if st.button("Cancel the fork", key="cancel_fork", icon=":material/close:"):
            st.session_state.pop(common.FORK_KEY, None)
            st.rerun()


# -- the page ---------------------------------------------------------------------------------------------

st.title("Train", anchor=False)
st.caption("The coursework's dynamic-convolution CNN on CIFAR-10: choose the hyperparameters, start a run, "
           "watch it learn.")
manager = common.job_manager()
# a new tab, or a reload, starts from the settings of the run it shows (the one training, or the last one)
opened_on_default = manager.snapshot().config is None
init_form(manager.snapshot().config or preset(DEFAULT_PRESET))
config = form_config()
st.session_state["preset"] = matching_preset(config)  # shows 'custom' (nothing picked) once a value is changed

forking = bool(st.session_state.get(common.FORK_KEY))
settings, main = st.columns([1, 2], gap="large")
with settings:
    if forking:
        fork_banner()
    st.segmented_control("Preset", list(PRESETS), key="preset", required=True, on_change=apply_preset,
                         format_func=lambda name: name, help="\n".join(f"- {PRESET_TEXT.get(n, n)}" for n in PRESETS))
    if st.session_state["preset"] is None:
        st.caption("custom: changed from the presets")
    else:
        st.caption(PRESET_TEXT.get(st.session_state["preset"], ""))
    if opened_on_default and st.session_state["preset"] == DEFAULT_PRESET:
        st.caption(DEFAULT_WHY[DEFAULT_PRESET])
    hyperparameter_widgets(forking)
config = form_config()
fork = fork_source()

with main:
    summary_box = st.container()
    problems = config.validate()
    found, root = data_status(config.data_dir)
    if found is None and not config.download:
        problems.append(f"there is no CIFAR-10 under {root}: download it from the sidebar, tick 'Download if "
                        "absent' (Data tab), or extract a copy under the data root.")
    try:
        device = pick_device(config.device)
    except DeviceError as error:
        problems.append(str(error))
    else:
        memory = check_memory(config, device) if not problems else None
        if memory is not None and memory.problem():
            problems.append(memory.problem())
        elif memory is not None and memory.warning():
            st.warning(f"Memory: {memory.warning()}", icon=":material/memory:")
    if fork is not None:
        problems += fork[2]
        for warning in fork[3]:
            st.warning(warning, icon=":material/warning:")
    if problems:
        st.error("This configuration cannot run:\n" + "\n".join(f"- {p}" for p in problems), icon=":material/block:")

    start_col, stop_col = st.columns(2)
    start = start_col.button("Start the fork" if fork else "Start training", key="start", type="primary",
                             icon=":material/call_split:" if fork else ":material/play_arrow:",
                             disabled=bool(problems), width="stretch")
    stop = stop_col.button("Stop", key="stop", icon=":material/stop:", disabled=not manager.running,
                           width="stretch", help="stops within one batch; what was learned is saved")
    if start:
        try:
            manager.start(config, fork=fork[:2] if fork else None)
        except JobBusy as error:
            st.warning(f"Not started: {error}", icon=":material/hourglass_top:")
        except (ConfigError, DeviceError, DataNotFound, DataFormatError) as error:
            st.error(f"Not started: {error}", icon=":material/block:")
        else:
            st.session_state.pop(common.FORK_KEY, None)
            st.rerun()  # redraw with Stop enabled and the live view polling
    if stop and manager.stop():
        st.toast(common.job_line(manager.snapshot()), icon=":material/stop_circle:")  # and how long, if long

    # runs of other processes first: compact, and nothing at all while there are none
    elsewhere = tuple(run.id for run in compare.running_elsewhere(common.runs_store(), manager.snapshot().run_id))
    st.fragment(live.elsewhere_view, run_every=live.ELSEWHERE_LIVE_S if elsewhere else live.ELSEWHERE_WATCH_S)(elsewhere)
    live.live_view(manager.snapshot())

# Last, because measuring the speed of a new model shape takes a few seconds: the page is drawn meanwhile.
with summary_box:
    model_summary(config, job_running=manager.running)
