"""The Train page's live view: the job's progress, its curves and epoch table as they arrive, the summary when
it ends, and the runs other processes are training into the same run store. Drawn by fragments that rerun on
their own while something trains.
"""

from __future__ import annotations

import streamlit as st

from cifar_app.analysis import compare
from cifar_app.engine.jobs import JobSnapshot
from cifar_app.store import report
from ui import common
from ui.charts import training as charts

duration, config_line = common.duration, common.config_line


def epoch_table(snap: JobSnapshot) -> None:
    frame = charts.epoch_frame(snap.epoch_rows())
    if not frame["val_acc"].notna().any():
        frame = frame.drop(columns="val_acc")
    st.dataframe(
        frame, hide_index=True, key="epoch_table",
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
    st.download_button("Download the epochs as CSV", frame.to_csv(index=False).encode(), on_click="ignore",
                       file_name=f"{snap.run_id or 'run'}-epochs.csv", mime="text/csv", key="epochs_csv",
                       icon=":material/download:")
    with st.expander("The coursework's per-epoch lines"):
        st.code("\n".join(snap.lines()), language=None)


def progress_view(snap: JobSnapshot) -> None:
    p, e = snap.progress, snap.evaluating
    stopping = " (stopping within one batch)" if snap.stop_requested else ""
    if p is None and e is None:
        st.progress(0.0, text=f"{snap.message or 'Starting'}…")
        return
    if e is not None:  # the end of an epoch: the held-out images, batch by batch
        st.progress(e.done / max(e.total, 1), text=f"Epoch {e.epoch} of {e.epochs}: evaluating on the {e.split} "
                    f"images, {e.done:,} of {e.total:,}{stopping}")
    else:
        st.progress(p.batch / p.batches, text=f"Epoch {p.epoch} of {p.epochs}: training, batch {p.batch} of "
                    f"{p.batches}{stopping}")
    columns = st.columns(4)
    if p is not None:
        columns[0].metric("Images/s", f"{p.images_per_s:,.0f}",
                          help="training images per second over the last half minute or so")
    columns[1].metric("Elapsed", duration(e.elapsed_s if e is not None else p.elapsed_s),
                      help="time of this run so far, earlier sessions of a resumed run included")
    if e is None:
        columns[2].metric("Epoch ETA", duration(p.epoch_eta_s), help="until this epoch's training ends (then the "
                                                                     "evaluation)")
    columns[3].metric("Run ETA", duration(e.run_eta_s if e is not None else p.run_eta_s),
                      help="until the run ends, evaluations included, at the recent pace")


def end_summary(snap: JobSnapshot) -> None:
    if snap.status == "failed":
        st.error(f"The run failed: {snap.reason}", icon=":material/error:")
    elif snap.status == "stopped":
        st.warning(f"The run was {snap.reason or 'stopped'}. What it learned is saved.", icon=":material/stop_circle:")
    else:
        first = snap.epochs[0].epoch if snap.epochs else 1
        done = f"epochs {first}–{snap.epochs[-1].epoch}" if first > 1 else f"{len(snap.epochs)} epochs"
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
    columns[3].caption(f"{len(snap.epochs)} of {snap.total_epochs} epochs")
    if snap.run_id:
        st.page_link("app_pages/evaluate.py", label="Evaluate this run: confusion matrix and mistakes",
                     icon=":material/grid_on:", query_params={"run": snap.run_id})
        st.caption(f"Saved in `{snap.run_path}`.")


@st.cache_data(show_spinner=False, max_entries=32)
def epoch_chart_specs(rows: tuple[tuple, ...], total: int, best: int | None, selection: str) -> tuple[dict, dict]:
    """The per-epoch charts as Vega-Lite specs, built once per new epoch rather than on every tick."""
    frame = charts.epoch_frame([dict(zip(charts.EPOCH_COLUMNS, row)) for row in rows])
    return (charts.loss_chart(frame, total).to_dict(),
            charts.accuracy_chart(frame, best, total, selection).to_dict())


def live_view(job_id: int, polling: bool) -> None:
    """The job as it is now; while it trains this reruns alone about once a second."""
    snap = common.job_manager().snapshot()
    if polling and (snap.job_id != job_id or not snap.running):
        st.rerun()  # the run ended (or another tab started one): redraw the page once, and stop polling
    if snap.status == "idle":
        st.info("Pick a preset or set the hyperparameters, then press **Start training**. The curves appear here "
                "as the run trains; you can leave the page, reload it or open another tab meanwhile.",
                icon=":material/info:")
        return
    title = snap.run_name or "new run"
    st.subheader(f"{'Training' if snap.running else 'Last run'}: {title}", anchor=False)
    if snap.config is not None:  # this tab's form may show other values than the run it is watching
        st.caption(config_line(snap.config) + (f" · {snap.origin}" if snap.origin else ""))
    if snap.running:
        progress_view(snap)
    else:
        end_summary(snap)
    if not snap.epochs and not snap.losses:
        return
    if snap.epochs:
        best = snap.best
        rows = tuple(tuple(row[c] for c in charts.EPOCH_COLUMNS) for row in snap.epoch_rows())
        loss_spec, accuracy_spec = epoch_chart_specs(rows, snap.total_epochs, best.epoch if best else None,
                                                     snap.selection)
        left, right = st.columns(2)
        with left.container(key="loss_chart"):
            st.vega_lite_chart(spec=loss_spec, width="stretch")
        with right.container(key="accuracy_chart"):
            st.vega_lite_chart(spec=accuracy_spec, width="stretch")
    else:
        st.caption("The loss and accuracy per epoch appear here when epoch 1 ends; the running loss is below.")
    if snap.losses:
        points = charts.loss_frame(snap.loss_rows())
        loss_col, lr_col = st.columns(2)
        with loss_col:
            smoothing = st.slider("Smoothing", 0.0, charts.MAX_SMOOTHING, charts.DEFAULT_SMOOTHING, step=0.01,
                                  key="loss_smoothing", help="how much of the previous average each point of the dark "
                                  "line keeps: 0 draws the reports themselves, 0.99 a slow trend")
            with st.container(key="batch_loss_chart"):
                st.altair_chart(charts.batch_loss_chart(points, smoothing), width="stretch")
        with lr_col.container(key="lr_chart"):
            st.altair_chart(charts.lr_chart(points), width="stretch")
        st.caption(
            "Left, the light line is the mean training loss of the batches since the previous report (about four a "
            "second), so the noise of single batches shows; the dark line is its exponential moving average, which "
            "shows the trend. With label smoothing or augmentation on, the training loss does not fall to zero. "
            "Right, the learning rate the schedule gave each report's batches."
        )
    if snap.epochs:
        epoch_table(snap)


ELSEWHERE_LIVE_S = 2.0  # while a run trains elsewhere: redraw its progress and curve


ELSEWHERE_WATCH_S = 10.0  # otherwise: look for one starting (a stat per run folder)


ELSEWHERE_CHART_HEIGHT = 150


def elsewhere_view(shown: tuple[str, ...]) -> None:
    """Runs that another process (a terminal, another machine) is training into this run store."""
    runs = compare.running_elsewhere(common.runs_store())
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
                spec = dict(epoch_chart_specs(tuple(tuple(r.get(c) for c in charts.EPOCH_COLUMNS) for r in rows),
                                              run.config().epochs, row["best_epoch"], row["best_by"])[1])
                spec["height"] = ELSEWHERE_CHART_HEIGHT
                with curve.container(key=f"elsewhere_chart_{run.id}"):
                    st.vega_lite_chart(spec=spec, width="stretch")
            else:
                curve.caption("Its curve appears when its first epoch ends.")
        st.page_link("app_pages/runs.py", label="Every run on the Runs page", icon=":material/history:")
