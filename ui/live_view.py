"""The Train page's live view: the job's progress, its curves and epoch table as they arrive, the summary when
it ends, and the runs other processes are training into the same run store.

While a run trains, the browser draws the progress and the running charts itself (live_part.js, from the state
ui/live_publish.py publishes), and Streamlit reruns the view only when an epoch or the run ends: an open tab then
costs the run next to nothing. What every tab draws is built once per change of the job and shared by all.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from cifar_app.analysis import compare
from cifar_app.engine.jobs import JobSnapshot
from cifar_app.store import report
from ui import common
from ui.charts import training as charts
from ui.live_part import live_part
from ui.live_publish import live_state, progress_state

duration, config_line = common.duration, common.config_line
WATCHING_KEY = "live_watching"  # this tab drew the job (id) while it trained: its end redraws the page once
SMOOTHING_HELP = ("how much of the previous average each point of the dark line keeps: 0 draws the reports "
                  "themselves, 0.99 a slow trend. The light line is the mean training loss of the batches since the "
                  "previous report (about four a second); with label smoothing or augmentation on, the training loss "
                  "does not fall to zero. Beside it, the learning rate the schedule gave each report's batches.")


# -- what every tab draws, built once per change of the job and shared by all of them ------------------------
# A tab reruns the live view about once a second; what it draws comes from these caches, keyed by what changed
# (the epochs, the running loss), so ten tabs build each chart once. The running-loss charts send their layout
# once and then only their rows, which the browser adds to the chart in place.


@dataclass(frozen=True)
class EpochView:
    loss_spec: dict
    accuracy_spec: dict
    table: pd.DataFrame
    csv: bytes
    lines: str


@st.cache_resource(max_entries=8, show_spinner=False)
def epoch_view(job_id: int, rows: tuple[tuple, ...], _snap: JobSnapshot) -> EpochView:
    """The per-epoch charts, table, CSV and the coursework's lines of one state of the job's epochs (`rows`)."""
    frame = charts.epoch_frame(_snap.epoch_rows())
    best = _snap.best
    table = frame if frame["val_acc"].notna().any() else frame.drop(columns="val_acc")
    return EpochView(charts.loss_chart(frame, _snap.total_epochs).to_dict(),
                     charts.accuracy_chart(frame, best.epoch if best else None, _snap.total_epochs,
                                           _snap.selection).to_dict(),
                     table, table.to_csv(index=False).encode(), "\n".join(_snap.lines()))


@st.cache_resource(max_entries=16, show_spinner=False)
def running_specs(job_id: int, state: tuple, smoothing: float, _snap: JobSnapshot) -> tuple[dict, dict]:
    """The running loss and learning-rate charts of a run that ended (`state`: its last report), for every tab."""
    points = charts.loss_frame(_snap.loss_rows())
    return charts.batch_loss_chart(points, smoothing).to_dict(), charts.lr_chart(points).to_dict()


def epoch_rows_key(snap: JobSnapshot) -> tuple[tuple, ...]:
    return tuple(tuple(event.row().values()) for event in snap.epochs)


def epoch_table(snap: JobSnapshot, view: EpochView) -> None:
    st.dataframe(
        view.table, hide_index=True, key="epoch_table",
        column_config={
            "epoch": st.column_config.NumberColumn("epoch", format="%d"),
            "train_loss": st.column_config.NumberColumn("training loss", format="%.4f"),
            "train_acc": st.column_config.NumberColumn("training accuracy", format="%.2f%%"),
            "val_acc": st.column_config.NumberColumn("validation accuracy", format="%.2f%%"),
            "test_acc": st.column_config.NumberColumn("test accuracy", format="%.2f%%"),
            "lr": st.column_config.NumberColumn("learning rate", format="%.2e"),
            "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
            "images_per_s": st.column_config.NumberColumn("images/s", format="%.0f"),
        },
    )
    st.download_button("Download the epochs as CSV", view.csv, on_click="ignore",
                       file_name=f"{snap.run_id or 'run'}-epochs.csv", mime="text/csv", key="epochs_csv",
                       icon=":material/download:")
    with st.expander("The coursework's per-epoch lines"):
        st.code(view.lines, language=None)


def end_summary(snap: JobSnapshot) -> None:
    if snap.status == "failed":
        st.error(f"The run failed: {snap.reason}", icon=":material/error:")
    elif snap.status == "stopped":
        st.warning(f"The run was {snap.reason or 'stopped'}. What it learned is saved.", icon=":material/stop_circle:")
    else:
        first = snap.epochs[0].epoch if snap.epochs else 1
        done = f"epochs {first}–{snap.epochs[-1].epoch}" if first > 1 else common.plural(len(snap.epochs), "epoch")
        st.success(f"The run finished {done}.", icon=":material/check_circle:")  # a fork starts after epoch 1
    best, final = snap.best, snap.final
    if not snap.epochs:
        return
    last = snap.epochs[-1]
    columns = st.columns(4)
    if best is not None:
        columns[0].metric("Best test accuracy", f"{best.test_acc:.2f}%", help=(
            "at the epoch with the best validation accuracy" if snap.selection == "validation" else
            "picked by test accuracy, as the coursework did: this flatters the result (hold out a validation "
            "split to pick honestly)"))
        columns[0].caption(f"epoch {best.epoch}" + (" (by validation)" if snap.selection == "validation" else ""))
    if final is not None:
        columns[1].metric("Final test accuracy", f"{final.test_acc:.2f}%")
        columns[1].caption(f"epoch {final.epoch}")
    columns[2].metric("Final training accuracy", f"{last.train_acc:.2f}%")
    columns[2].caption(f"training loss {last.train_loss:.4f}")
    columns[3].metric("Time", duration(snap.seconds or snap.elapsed_s))
    columns[3].caption(f"{len(snap.epochs)} of {common.plural(snap.total_epochs, 'epoch')}")
    if snap.run_id:
        st.page_link("app_pages/evaluate.py", label="Evaluate this run: confusion matrix and mistakes",
                     icon=":material/grid_on:", query_params={"run": snap.run_id})
        st.caption(f"Saved in `{snap.run_path}`.")


def live_view(snap: JobSnapshot) -> None:
    """The job as it is now: a fragment that the browser's live part (live_part.js) reruns when an epoch or the
    run ends; between those, that part draws the progress and the running charts itself from the state the
    server publishes (ui/live_publish.py), and nothing reruns."""
    if snap.status == "idle":
        st.info("Pick a preset or set the hyperparameters, then press **Start training**. The curves appear here "
                "as the run trains; you can leave the page, reload it or open another tab meanwhile.",
                icon=":material/info:")
        return
    title = snap.run_name or "new run"
    st.subheader(f"{'Training' if snap.running else 'Last run'}: {title}", anchor=False)
    if snap.config is not None:  # this tab's form may show other values than the run it is watching
        st.caption(config_line(snap.config) + (f" · {snap.origin}" if snap.origin else ""))
    publisher = common.live_publisher()
    if snap.running and publisher.ok:
        st.fragment(job_view)(snap.job_id)
    else:  # not training, or no place to publish: a fragment that reruns itself while something trains
        st.fragment(job_view, run_every=common.POLL_S if snap.running else None)(snap.job_id)


def job_view(job_id: int) -> None:
    """Everything of the job that changes as it trains. Reruns when the browser's live part says an epoch or the
    run ended (or on its own timer, where nothing can be published); the end of the run redraws the page."""
    snap = common.job_manager().snapshot()
    if snap.job_id != job_id or (st.session_state.get(WATCHING_KEY) == job_id and not snap.running):
        st.session_state.pop(WATCHING_KEY, None)
        st.rerun()  # the page's buttons and the sidebar follow the job
    if snap.running:
        st.session_state[WATCHING_KEY] = job_id
        smoothing = st.slider("Smoothing of the running loss", 0.0, charts.MAX_SMOOTHING, charts.DEFAULT_SMOOTHING,
                              step=0.01, key="loss_smoothing", help=SMOOTHING_HELP)
        publisher = common.live_publisher()
        if publisher.ok:
            live_part("main", "live_part", publisher.url, live_state(snap), smoothing=smoothing,
                      loss_colour=charts.LOSS_COLOUR, lr_colour=charts.LR_COLOUR)
        else:
            progress = progress_state(snap)
            st.progress(progress["fraction"], text=progress["text"])
            st.html(f"<p>{progress['line']}</p>")
    else:
        end_summary(snap)
        running_charts(snap)
    if not snap.epochs:
        if snap.running:
            st.caption("The loss and accuracy per epoch appear here when epoch 1 ends.")
        return
    epochs = epoch_view(snap.job_id, epoch_rows_key(snap), snap)
    left, right = st.columns(2)
    with left.container(key="loss_chart"):
        st.vega_lite_chart(spec=epochs.loss_spec, width="stretch")
    with right.container(key="accuracy_chart"):
        st.vega_lite_chart(spec=epochs.accuracy_spec, width="stretch")
    epoch_table(snap, epochs)


def running_charts(snap: JobSnapshot) -> None:
    """The running loss and the learning rate of a run that ended, report by report."""
    if not snap.losses:
        return
    smoothing = st.slider("Smoothing of the running loss", 0.0, charts.MAX_SMOOTHING, charts.DEFAULT_SMOOTHING,
                          step=0.01, key="loss_smoothing", help=SMOOTHING_HELP)
    last = snap.losses[-1]
    loss_spec, lr_spec = running_specs(snap.job_id, (len(snap.losses), last.position, last.loss), smoothing, snap)
    loss_col, lr_col = st.columns(2)
    with loss_col.container(key="batch_loss_chart"):
        st.vega_lite_chart(spec=loss_spec, width="stretch")
    with lr_col.container(key="lr_chart"):
        st.vega_lite_chart(spec=lr_spec, width="stretch")


ELSEWHERE_LIVE_S = 5.0  # while a run trains elsewhere: redraw its progress and curve (each rerun costs the browser)
ELSEWHERE_WATCH_S = 10.0  # otherwise: look for one starting (a stat per run folder)
ELSEWHERE_CHART_HEIGHT = 150


@st.cache_resource(max_entries=16, show_spinner=False)
def elsewhere_spec(rows: tuple[tuple, ...], total: int, best: int | None, selection: str) -> dict:
    """A run's accuracy per epoch, small, built once per new epoch and shared by every tab."""
    frame = charts.epoch_frame([dict(zip(charts.EPOCH_COLUMNS, row)) for row in rows])
    return {**charts.accuracy_chart(frame, best, total, selection).to_dict(), "height": ELSEWHERE_CHART_HEIGHT}


def elsewhere_view(shown: tuple[str, ...]) -> None:
    """Runs that another process (a terminal, another machine) is training into this run store."""
    runs = compare.running_elsewhere(common.runs_store(), common.job_manager().snapshot().run_id)
    if tuple(run.id for run in runs) != shown:
        st.rerun()  # one started or ended: redraw the page, which sets the polling pace
    if not runs:
        return
    with st.container(border=True, key="elsewhere"):
        st.markdown("**Also training elsewhere**")
        st.caption("Runs that other processes are writing into this run store (e.g. `python -m cifar_app.train` "
                   "in a terminal); they cannot be stopped from here.")
        for run in runs:
            progress, curve = st.columns([3, 2], vertical_alignment="center")
            progress.progress(run.progress(), text=f"**{run.name}** · {compare.elsewhere_line(run)}")
            rows = run.metrics()
            if rows:
                row = report.run_row(run)
                spec = elsewhere_spec(tuple(tuple(r.get(c) for c in charts.EPOCH_COLUMNS) for r in rows),
                                      run.config().epochs, row["best_epoch"], row["best_by"])
                with curve.container(key=f"elsewhere_chart_{run.id}"):
                    st.vega_lite_chart(spec=spec, width="stretch")
            else:
                curve.caption("Its curve appears when its first epoch ends.")
        st.page_link("app_pages/runs.py", label="Every run on the Runs page", icon=":material/history:")
