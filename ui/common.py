"""What every page shares: the process-wide training job, the data folder, and the sidebar.

The job manager lives in `st.cache_resource`, so there is one per server process, shared by every tab,
page and rerun (session state is per tab and lost on refresh: never the owner of a thread). Pages read the
job with `job_manager().snapshot()`; the run that just ended is `snapshot().run_id` in `runs_store()`.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from cifar_app.data.dataset import Cifar10, download_cifar10, load_cifar10
from cifar_app.data.formats import DataFormatError, Found, data_copies, data_status, resolve_root
from cifar_app.engine.speed import SpeedCache
from cifar_app.config import TrainConfig, matching_preset
from cifar_app.device import describe_device, pick_device
from cifar_app.engine.jobs import JobManager, JobSnapshot
from cifar_app.store.runs import RunStore
from ui.live_part import live_part

if TYPE_CHECKING:
    from ui.live_publish import LivePublisher

DATA_DIR_KEY = "data_dir"
POLL_S = 1.0  # how often a tab reruns a live part that the browser cannot draw itself (no place to publish)
SIDEBAR_POLL_S = 5.0  # the sidebar's summary of the job, where it cannot be published: a rerun redraws the page
SIDEBAR_KEY = "sidebar_watching"  # the job (id) this tab's sidebar showed training: its end redraws the page
# A progress bar animates every change of its width: redrawn once a second, the animation kept the browser
# painting most of the time (twice the browser's CPU of the rest of the live view, scripts/watch_cost.py).
STILL_PROGRESS = "<style>[data-testid='stProgress'] * {transition: none !important;}</style>"
FORM_PREFIX = "cfg_"  # session-state keys of the Train page's hyperparameter widgets: cfg_<TrainConfig field>
FORK_KEY = "fork_source"  # {"run": id, "which": "best"|"last", "epoch": n, "name": ...} while the form sets up a fork
FORM_FIELDS = [f.name for f in fields(TrainConfig) if f.name != "data_dir"]  # the data folder is in the sidebar
_DEFAULT_TYPES = {f.name: type(getattr(TrainConfig(data_dir=""), f.name)) for f in fields(TrainConfig)}


@st.cache_resource(show_spinner=False)
def job_manager() -> JobManager:
    """The one training job of this server process (runs are saved under $CIFAR_RUNS_DIR or ./runs)."""
    return JobManager(RunStore())


def runs_store() -> RunStore:
    """The run store the job saves into."""
    return job_manager().store


@st.cache_resource(show_spinner=False)
def live_publisher() -> "LivePublisher":
    """The job's live state as a file every tab's browser reads (ui/live_publish.py); one per server process."""
    from ui.live_publish import LivePublisher  # it imports this module

    return LivePublisher(job_manager())


@st.cache_resource(show_spinner=False)
def speed_cache() -> SpeedCache:
    """Measured training speeds, shared by every tab of the process."""
    return SpeedCache()


@st.cache_resource(show_spinner=False)
def device_description() -> str:
    return describe_device(pick_device("auto"))


@st.cache_resource(show_spinner="Loading CIFAR-10…", max_entries=2)
def _dataset(root: str) -> Cifar10:
    return load_cifar10(root)


def dataset() -> Cifar10 | None:
    """The decoded dataset of the sidebar's folder, one copy per process for every page and the training
    job (180 MB: holding it twice would double that); None while the folder has no copy."""
    found, root = data_status(data_dir())
    return _dataset(str(root.resolve())) if found is not None else None


def data_fingerprint() -> str | None:
    """Which images the sidebar's copy holds (formats.data_fingerprint), to check a run's against; None while
    there is no readable copy."""
    try:
        data = dataset()
    except (OSError, DataFormatError):  # the pages that show the data say what is wrong with it
        return None
    return data.fingerprint if data is not None else None


def data_dir() -> str:
    """The copy of CIFAR-10 the sidebar chose (the same on every page): one of the copies under the data root the
    operator configured, else the root itself (where Download puts one). A browser never names a path itself."""
    chosen, root = st.session_state.get(DATA_DIR_KEY), resolve_root()
    return chosen if chosen and chosen in data_copies(root) else str(root)


def _copy_label(root: Path, opener: str, found: Found) -> str:
    where = "the data root" if Path(opener) == root else str(Path(opener).relative_to(root))
    return f"{where}: {found.describe().split(' at ')[0]}"


def form_value(name: str, value: Any) -> Any:
    """A config value as its Train page widget holds it (the field's own type: a saved 0 may be a float)."""
    kind = _DEFAULT_TYPES[name]
    return kind(value) if kind in (int, float, bool, str) else value


def open_in_train_form(config: TrainConfig, fork: dict[str, Any] | None = None) -> None:
    """Fill the Train page's widgets with `config` (and remember the fork's source, if any), then go there."""
    for name in FORM_FIELDS:
        st.session_state[FORM_PREFIX + name] = form_value(name, getattr(config, name))
    if fork is None:
        st.session_state.pop(FORK_KEY, None)
    else:
        st.session_state[FORK_KEY] = fork
    st.switch_page("app_pages/train.py")


def plural(n: float, word: str) -> str:
    """'1 epoch', '3 epochs', '0 epochs'."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def sci(value: float) -> str:
    """1e-3, 4e-3, 1.5e-4, 0; 0.2 and 1 as they are (not 2e-1, 1e0): learning rates and weight decays as people
    write them."""
    if value == 0 or 0.1 <= abs(value) < 1000:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def duration(seconds: float) -> str:
    """Short enough for a metric in a quarter of the page: 45 s, 16.5 min, 2.3 h."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def config_line(config: TrainConfig) -> str:
    """The run's recipe in one line: its preset (or custom) and the numbers that matter most."""
    name = matching_preset(config) or "custom"
    return (f"{name} · {config.blocks} blocks, width {config.width}, K={config.k} · {config.optimizer} lr "
            f"{sci(config.lr)}, {config.schedule} schedule · batch {config.batch_size} · {plural(config.epochs, 'epoch')}")


def job_line(snap: JobSnapshot) -> str:
    """The job's state in a few words."""
    if snap.status == "idle":
        return "Idle: no run started since the app started."
    if snap.running:
        if snap.stop_requested:
            wait = stop_wait(snap)
            return f"Stopping after this batch ({wait})…" if wait else "Stopping after this batch…"
        now = snap.evaluating or snap.progress  # the latest: an epoch's batches may end between two batch reports
        if now is None:
            return f"Running: {snap.message or 'starting'}…"
        return f"Running: epoch {now.epoch} of {now.epochs}" + (", evaluating" if snap.evaluating else "")
    if snap.status == "failed":
        return f"Failed: {snap.reason.splitlines()[0] if snap.reason else 'unknown reason'}"
    best = snap.best
    accuracy = f", best test accuracy {best.test_acc:.2f}% (epoch {best.epoch})" if best else ""
    return f"{snap.status.capitalize()}{accuracy}"


LONG_BATCH_S = 5.0  # a Stop that waits longer than this for its batch says so


def stop_wait(snap: JobSnapshot) -> str:
    """How long a Stop waits for the batch under way, where that is long (a batch of 8192 on a CPU: half a
    minute): 'up to 29 s: ...'; '' where it is short or unknown."""
    p, config = snap.progress, snap.config
    if p is None or config is None or not p.images_per_s or snap.evaluating is not None:
        return ""
    seconds = config.batch_size / p.images_per_s
    if seconds < LONG_BATCH_S:
        return ""
    return f"up to {duration(seconds)}: one batch of {config.batch_size:,} images takes that long here"


def run_fraction(snap: JobSnapshot) -> float:
    """How much of the planned run is done, 0..1."""
    if snap.progress is None or not snap.total_epochs:
        return 0.0
    p = snap.progress
    return min(1.0, (p.epoch - 1 + p.batch / p.batches) / p.epochs)


def _sidebar_job(job_id: int) -> None:
    """The job in a line: while it trains, the browser draws it from the published state (ui/live_part.py) and
    asks for a rerun of this fragment when it ends, which redraws the page."""
    snap = job_manager().snapshot()
    if snap.job_id != job_id or (st.session_state.get(SIDEBAR_KEY) == job_id and not snap.running):
        st.session_state.pop(SIDEBAR_KEY, None)
        st.rerun()  # the run ended: redraw the whole page once
    line = job_line(snap)
    if snap.running:
        st.session_state[SIDEBAR_KEY] = job_id
        publisher = live_publisher()
        if publisher.ok:
            from ui.live_publish import live_state  # it imports this module

            live_part("sidebar", "sidebar_live_part", publisher.url, live_state(snap))
        else:
            fraction = run_fraction(snap)
            st.progress(fraction, text=f"{line} · {fraction:.0%}" if snap.progress else line)
        st.caption(snap.run_name or snap.message)
    elif snap.status == "failed":
        st.error(line)
    elif snap.status == "stopped":
        st.warning(line)
    elif snap.status == "finished":
        st.success(line)
    else:
        st.caption(line)


def _download(root) -> None:
    bar = st.progress(0.0, text="Connecting…")

    def progress(done: int, total: int) -> None:
        text = f"Downloading CIFAR-10: {done / 2**20:.0f} of {total / 2**20:.0f} MB" if total else "Downloading…"
        bar.progress(min(1.0, done / total) if total else 0.0, text=text)

    try:
        download_cifar10(root, progress=progress)
    except (OSError, DataFormatError) as error:  # ConnectionError is an OSError
        bar.empty()
        st.error(str(error))
    else:
        bar.progress(1.0, text="Downloaded and extracted.")
        st.rerun()


def sidebar() -> None:
    """The sidebar of every page: the device, whether the data is ready, and the training job."""
    st.session_state[DATA_DIR_KEY] = data_dir()  # a choice no longer there (or never offered) falls back to the root
    st.html(STILL_PROGRESS)
    with st.sidebar:
        st.markdown("**Device**")
        st.caption(device_description())
        st.markdown("**Data**")
        _sidebar_data()
        st.markdown("**Training job**")
        snap = job_manager().snapshot()
        polling = snap.running and not live_publisher().ok  # where nothing can be published, a timer
        st.fragment(_sidebar_job, run_every=SIDEBAR_POLL_S if polling else None)(snap.job_id)


def _sidebar_data() -> None:
    """The copy to use, chosen among those under the data root; where there is none, Download into the root."""
    root = resolve_root()
    copies = data_copies(root)
    if copies:
        st.selectbox("Data copy", list(copies), key=DATA_DIR_KEY, format_func=lambda v: _copy_label(root, v, copies[v]),
                      help="The copies of CIFAR-10 under the data root the app was started with (CIFAR_DATA_DIR, "
                           "or ./data): the original python batches, the binary release, or an image folder "
                           "(train/<class>/, test/<class>/), at the root or one folder down.")
    found, _ = data_status(data_dir())
    if found is not None:
        st.caption(f":material/check_circle: CIFAR-10 ready: {found.describe()}")
    else:
        st.warning(f"No CIFAR-10 under the data root `{root}`.")
        if st.button("Download CIFAR-10 (163 MB)", key="download_data", icon=":material/download:"):
            _download(root)
        st.caption("Or extract a copy there, e.g. `tar -xzf cifar10-jpeg.tar.gz -C <data root>`; the data root is "
                   "set where the app starts (CIFAR_DATA_DIR).")
