"""The Runs page: every run in the run store, compared, and each one resumed, forked, downloaded, renamed or
deleted.

Runs are folders on disk (cifar_app.store.runs), written by this app's job or by any other process, so the page
reads the store on every run and watches it: while a run trains, the table and the curves redraw every few
seconds in a fragment; otherwise a tiny fragment only compares the store's file times and redraws the page
when a run appears, ends or writes an epoch.
"""

from __future__ import annotations

import streamlit as st

from cifar_app.analysis import compare
from cifar_app.store import report
from ui.charts import training as charts
from cifar_app.store.checkpoints import export_bytes
from cifar_app.config import ConfigError
from cifar_app.data.formats import DataFormatError, DataNotFound
from cifar_app.device import DeviceError
from cifar_app.engine.jobs import JobBusy, NotResumable
from cifar_app.store.lineage import DataMismatch, check_resume_data, checkpoint_position
from cifar_app.store.runs import Run
from ui import common

LIVE_S = 2.0  # while a run trains: redraw the table and the curves
WATCH_S = 5.0  # otherwise: compare the store's file times, redraw only on a change
COMPARE_KEY, PICK_KEY, CONFIRM_KEY = "compare", "run_pick", "confirm_delete"
STATUS_HELP = ("running: training now (here or in another process) · finished: all its epochs · stopped: by the "
               "user, resumable · failed: with a reason · interrupted: its process died, resumable")
HONEST_NOTE = (
    "Runs whose best epoch is picked **by test** accuracy had no validation split: choosing the best epoch by "
    "test accuracy, as the coursework did, flatters the result (the test set picked the epoch it is then "
    "scored on). Hold out a validation split (Train page, Data tab, or `--val-size 5000`) to choose by "
    "validation and report the test accuracy at that epoch."
)


def hidden(column: dict) -> dict:
    """A column the table holds but shows only when the user ticks it in the table's column menu."""
    return {**column, "hidden": True}


# The table fits the page with the columns that tell runs apart at a glance; the recipe's columns are hidden
# (the table's column menu shows them; "What differs" and "One run" below spell the recipe out).
COLUMNS = {
    "name": st.column_config.TextColumn("name"),
    "status": st.column_config.TextColumn("status", help=STATUS_HELP, width="small"),
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent",
                                                width="small",
                                                help="of the planned epochs; a run in another process reports "
                                                     "its batches every few seconds"),
    "epochs": st.column_config.TextColumn("epochs", help="done / planned", width="small"),
    "labels": st.column_config.TextColumn("labels", help="the training labels: the dataset's own, or a label set's "
                                          "NAME@VERSION (python -m cifar_app.labels list)", width="small"),
    "best_test_acc": st.column_config.NumberColumn("best test", format="%.2f%%", width="small",
                                                   help="test accuracy at the best epoch"),
    "best_epoch": st.column_config.NumberColumn("best epoch", format="%d", width="small"),
    "final_test_acc": st.column_config.NumberColumn("final test", format="%.2f%%", width="small",
                                                    help="test accuracy at the last epoch"),
    "seconds": st.column_config.NumberColumn("time", format="%.0f s", help="training time", width="small"),
    "started": hidden(st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm")),
    "preset": hidden(st.column_config.TextColumn("preset")),
    "width": hidden(st.column_config.NumberColumn("width", format="%d")),
    "optimizer": hidden(st.column_config.TextColumn("optimizer")),
    "lr": hidden(st.column_config.NumberColumn("lr", format="%.1e")),
    "batch_size": hidden(st.column_config.NumberColumn("batch", format="%d")),
    "schedule": hidden(st.column_config.TextColumn("schedule")),
    "best_by": hidden(st.column_config.TextColumn("best by", help="what picked the best epoch: validation or test "
                                                                  "accuracy")),
    "final_train_acc": hidden(st.column_config.NumberColumn("final train acc", format="%.2f%%")),
    "device": hidden(st.column_config.TextColumn("device")),
    "forked_from": hidden(st.column_config.TextColumn("forked from", help="parent run @ branch epoch")),
    "id": hidden(st.column_config.TextColumn("folder")),
}


@st.cache_data(show_spinner=False, max_entries=16)
def compare_spec(curves, branches, metric: str, total: int) -> dict:
    """A comparison chart's Vega-Lite spec, built once per new epoch (the fragment redraws it every tick)."""
    return charts.compare_chart(curves, metric, branches, total).to_dict()


# -- the table and the comparison (redrawn while a run trains) --------------------------------------------


def runs_view(ids: tuple[str, ...], polling: bool) -> None:
    store = common.runs_store()
    runs = store.runs()
    if tuple(r.id for r in runs) != ids:
        st.rerun()  # a run appeared or went: redraw the page, whose run pickers list the runs
    rows, unreadable = compare.table_rows(runs)
    if polling and not any(row["status"] == "running" for row in rows):
        st.rerun()  # the last run ended: redraw once, which stops the polling
    readable = [r for r in runs if r.id not in unreadable]
    labels = compare.run_labels(readable)
    st.dataframe(compare.table_frame(rows, labels), hide_index=True, key="runs_table", column_config=COLUMNS,
                 column_order=list(COLUMNS), placeholder="")  # a figure not known yet is a blank, not "None"
    side_by_side = compare.by_labels(readable)
    if not side_by_side.empty:
        st.markdown("**The same recipe on other labels** (e.g. clean, noisy and curated)")
        st.dataframe(side_by_side, hide_index=True, key="runs_by_labels", column_config={
            "final_test_acc": st.column_config.NumberColumn("final test", format="%.2f%%"),
            "best_test_acc": st.column_config.NumberColumn("best test", format="%.2f%%")})
    for run_id, error in unreadable.items():
        st.warning(f"`{run_id}` cannot be read ({error}); it is left out.", icon=":material/warning:")
    if any(row["best_by"] == "test" and row["best_epoch"] is not None for row in rows):
        st.caption(HONEST_NOTE)
    compare_section(readable, labels)


def compare_section(runs: list[Run], labels: dict[str, str]) -> None:
    st.subheader("Compare", anchor=False)
    ids = [run.id for run in runs]
    if COMPARE_KEY not in st.session_state:  # first visit: the two newest runs with curves
        st.session_state[COMPARE_KEY] = [run.id for run in runs if run.metrics()][:2]
    # drop deleted runs before the widget reads its value
    st.session_state[COMPARE_KEY] = [i for i in st.session_state[COMPARE_KEY] if i in ids]
    left, right = st.columns([3, 2])
    picked = left.multiselect(
        "Runs to compare", ids, key=COMPARE_KEY, format_func=lambda i: labels.get(i, i),
        placeholder="Pick runs", help="Their curves share the axes below, a colour per run; a fork starts where it "
                                      "branched from its parent.",
    )
    metric = right.segmented_control(
        "Accuracy", ["test_acc", "val_acc", "train_acc"], key="compare_metric", default="test_acc", required=True,
        format_func=lambda m: {"test_acc": "test", "val_acc": "validation", "train_acc": "training"}[m],
    )
    if not picked:
        st.caption("Pick one or more runs to draw their curves on the same axes.")
        return
    chosen = [run for run in runs if run.id in picked]
    curves, branches = compare.curves(chosen, common.runs_store(), labels)
    total = max(run.config().epochs for run in chosen)
    if curves[metric].notna().any():
        accuracy_spec = compare_spec(curves, branches, metric, total)
    else:
        accuracy_spec = None
    loss_spec = compare_spec(curves, branches, "train_loss", total)
    left, right = st.columns(2)
    with left.container(key="compare_accuracy"):
        if accuracy_spec is None:
            st.info("None of these runs measured this accuracy (validation needs a validation split).")
        else:
            st.vega_lite_chart(spec=accuracy_spec, width="stretch")
    with right.container(key="compare_loss"):
        st.vega_lite_chart(spec=loss_spec, width="stretch")
    differences = compare.config_differences(chosen, labels, common.runs_store())
    if len(chosen) < 2:
        st.caption("Pick a second run to see the hyperparameters that differ.")
    elif differences.empty:
        st.caption("These runs have the same hyperparameters, device and data.")
    else:
        st.markdown("**What differs**")
        with st.container(key="differences"):
            st.table(differences)


# -- one run: resume, fork, download, rename, delete ------------------------------------------------------


def resume_tab(run: Run) -> None:
    manager = common.job_manager()
    problem = run.resume_problem()
    if problem:
        st.caption(f"Cannot be resumed: {problem}")
    else:
        epoch, batch = checkpoint_position(run, "last")
        where = f"epoch {epoch + 1}" + (f", batch {batch + 1}" if batch else "")
        st.caption(f"Continues from its last checkpoint at {where} with its own hyperparameters, up to its "
                   f"{common.plural(run.config().epochs, 'epoch')}: the same epochs and curves an uninterrupted run would have. "
                   "It trains in the background; the Train page shows it live.")
    busy = manager.running
    if busy and not problem:
        st.caption("A run is already training in this app; one at a time.")
    if st.button("Resume", key="resume", type="primary", icon=":material/play_arrow:", disabled=bool(problem) or busy):
        try:
            check_resume_data(run, common.data_fingerprint())  # the sidebar's copy: the one the run trained on?
            manager.start(run.config().replace(data_dir=common.data_dir()), resume=run)
        except (JobBusy, NotResumable, ConfigError, DeviceError, DataNotFound, DataFormatError, DataMismatch) as error:
            st.error(f"Not resumed: {error}", icon=":material/block:")
        else:
            st.switch_page("app_pages/train.py")


def checkpoints(run: Run) -> dict[str, int]:
    """{'best'|'last': epoch} of the run's readable checkpoints."""
    found = {which: checkpoint_position(run, which) for which in ("best", "last")}
    return {which: position[0] for which, position in found.items() if position is not None}


def fork_tab(run: Run) -> None:
    epochs = checkpoints(run)
    available = list(epochs)
    if not available:
        st.caption("No readable checkpoint: a run saves one at the end of each epoch.")
        return
    which = st.radio("From", available, key=f"fork_which_{run.id}", horizontal=True,
                     format_func=lambda w: f"{w} checkpoint (after epoch {epochs[w]})",
                     help="best: the best epoch (by validation accuracy when there is a split); last: where it ended")
    st.caption("A fork is a new run that starts from these weights with the hyperparameters you choose on the "
               "Train page (this run's are filled in; the network's shape stays). Its epochs are numbered on from "
               "the branch point, and the comparison chart shows where it branched.")
    if st.button("Fork on the Train page", key="fork", icon=":material/call_split:"):
        config = run.config()
        common.open_in_train_form(
            config.replace(epochs=max(config.epochs, epochs[which] + 1), name=f"{run.name}-fork"),
            fork={"run": run.id, "which": which, "epoch": epochs[which], "name": run.name},
        )


def download_tab(run: Run) -> None:
    epochs = checkpoints(run)
    if not epochs:
        st.caption("No readable checkpoint: a run saves one at the end of each epoch.")
        return
    which = st.radio("Checkpoint", list(epochs), key=f"download_which_{run.id}", horizontal=True,
                     format_func=lambda w: f"{w} (after epoch {epochs[w]})")
    file_name = f"{run.id}-{which}.pt"
    st.download_button(
        "Download the model", data=lambda: export_bytes(run, which), file_name=file_name,
        mime="application/octet-stream", key="download_model", icon=":material/download:", on_click="ignore",
        help="weights and config in one file (no optimizer state), made when you click",
    )
    st.caption("Load it with plain PyTorch (`weights_only=True`: tensors and plain values only), or upload it on "
               "the Evaluate and Predict pages:")
    st.code(compare.load_snippet(file_name), language="python")
    links = st.columns(2)
    links[0].page_link("app_pages/evaluate.py", label="Evaluate this run", icon=":material/grid_on:",
                       query_params={"run": run.id})
    links[1].page_link("app_pages/predict.py", label="Predict with this run", icon=":material/image_search:",
                       query_params={"run": run.id})


def manage_tab(run: Run, status: str) -> None:
    store = common.runs_store()
    name = st.text_input("Name", value=run.name, key=f"rename_{run.id}", max_chars=80)
    if st.button("Rename", key="rename", icon=":material/edit:", disabled=name.strip() == run.name):
        store.rename(run, name)
        st.rerun()
    st.divider()
    if st.session_state.get(CONFIRM_KEY) != run.id:
        if st.button("Delete…", key="delete", icon=":material/delete:", disabled=status == "running",
                     help="stop it first" if status == "running" else "asks for confirmation"):
            st.session_state[CONFIRM_KEY] = run.id
            st.rerun()
        return
    forks = [r.name for r in store.runs() if (r.parent() or ("",))[0] == run.id]
    st.warning(f"Delete **{run.name}**: its folder `{run.path}` with its metrics and checkpoints? This cannot be "
               "undone." + (f" Its forks ({', '.join(forks)}) keep their own files." if forks else ""),
               icon=":material/delete_forever:")
    yes, no = st.columns(2)
    if yes.button("Yes, delete it", key="delete_confirm", type="primary"):
        st.session_state.pop(CONFIRM_KEY, None)
        try:
            store.delete(run)
        except (RuntimeError, OSError) as error:
            st.error(f"Not deleted: {error}")
            return
        st.toast(f"Deleted {run.name}.", icon=":material/delete:")
        st.rerun()
    if no.button("Cancel", key="delete_cancel"):
        st.session_state.pop(CONFIRM_KEY, None)
        st.rerun()


def run_section(runs: list[Run], labels: dict[str, str]) -> None:
    st.subheader("One run", anchor=False)
    ids = [run.id for run in runs]
    if st.query_params.get("run") in ids:  # a link from another page (a sweep's trial) names its run
        st.session_state[PICK_KEY] = st.query_params["run"]
        del st.query_params["run"]
    if st.session_state.get(PICK_KEY) not in ids:
        st.session_state.pop(PICK_KEY, None)
    run_id = st.selectbox("Run", ids, key=PICK_KEY, format_func=lambda i: labels.get(i, i),
                          help="resume, fork, download, rename or delete it")
    run = runs[ids.index(run_id)]
    row = report.run_row(run)
    status = row["status"]
    line = f"**{status}**" + (f": {row['reason']}" if row["reason"] else "")
    st.markdown(f"{line} · {row['epochs']} epochs · `{run.path}`")
    st.caption(common.config_line(run.config()) + f" · {row['device']}")
    record = run.config_record()
    if record.get("sweep"):
        st.page_link("app_pages/sweeps.py", label=f"Trial {record.get('trial')} of sweep {record['sweep']}",
                     icon=":material/tune:", query_params={"sweep": record["sweep"]})
    if row["best_by"] == "test" and row["best_epoch"] is not None:
        st.caption(f"Best test accuracy {row['best_test_acc']:.2f}% at epoch {row['best_epoch']}, picked by test "
                   "accuracy (no validation split): this flatters the result.")
    resume, fork, download, manage = st.tabs(["Resume", "Fork", "Download", "Rename or delete"])
    with resume:
        resume_tab(run)
    with fork:
        fork_tab(run)
    with download:
        download_tab(run)
    with manage:
        manage_tab(run, status)


def watch(signature: tuple) -> None:
    """Redraw the page when a run appears, goes, or writes (a few stat calls every WATCH_S seconds)."""
    if common.runs_store().signature() != signature:
        st.rerun()


# -- the page ---------------------------------------------------------------------------------------------

st.title("Runs", anchor=False)
store = common.runs_store()
st.caption(f"Every run, from this dashboard or from `python -m cifar_app.train`, is a folder under "
           f"`{store.root.resolve()}` (set `CIFAR_RUNS_DIR` to move it): config, per-epoch metrics, last and best "
           "checkpoints. Runs that other processes write here appear and update on their own.")
signature = store.signature()
all_runs = store.runs()
running = False
if not all_runs:
    st.info("No runs yet. Train one on the **Train** page, or in a terminal with "
            "`python -m cifar_app.train --preset quick`; it appears here as it starts.", icon=":material/info:")
else:
    running = bool(store.running())
    st.fragment(runs_view, run_every=LIVE_S if running else None)(tuple(r.id for r in all_runs), running)
    _, unreadable = compare.table_rows(all_runs)
    usable = [run for run in all_runs if run.id not in unreadable]
    if usable:
        run_section(usable, compare.run_labels(usable))
if not all_runs or not running:  # while a run trains, runs_view redraws instead
    st.fragment(watch, run_every=WATCH_S)(signature)
