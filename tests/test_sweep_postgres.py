"""Sweeps across machines, on a real PostgreSQL server of the tests' own (a password is needed to connect):
the README's recipe as written (its password on no command line, in no run file, log or page; the same best
trial on the page, in `sweep show` and on the Runs page); workers with runs folders of their own and a viewer in
a far time zone with a fast clock fail no live trial, while a killed worker's trial is failed by Optuna's
heartbeat within the grace period and run again; a `pg_ctl restart` mid-sweep loses no completed trial. (Against
the code before issue 20, the password was on the workers' command lines and in every run's config.json, and
such a viewer failed live trials as dead.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from optuna.trial import TrialState

from cifar_app.sweeps import spec as sweep_spec
from cifar_app.store.runs import RunStore
from cifar_app.sweeps.storage import SweepStorage
from conftest import ROOT, write_batches
from sweep_helpers import PASSWORD, WORKER_ENV, PgServer, logs, start_workers, tiny_spec, wait_all

TINY_SET = "--data-dir {data} --val-size 100 --set blocks=3 --set width=8 --set k=2 --set batch_size=64 " \
           "--set epochs=2 --set device=cpu --pruner none"


@pytest.fixture(scope="module")
def pg():
    server = PgServer()
    why = server.start()
    if why:
        server.stop()
        pytest.skip(why)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep-data")
    write_batches(root, train_per_class=60, test_per_class=10)
    return root


def readme_recipe() -> str:
    """The README's many-machines recipe, as written."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("    export CIFAR_SWEEP_STORAGE="):]
    return "\n".join(line[4:] for line in block[:block.index("\n\n")].splitlines())


def watch_command_lines(stop: threading.Event, seen: list[str]) -> None:
    """Every process's command line on this machine, read over and over while the sweep runs."""
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                seen.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
        time.sleep(0.2)


def test_the_readme_recipe_keeps_the_password_secret_and_every_view_names_the_same_best_trial(pg, data_dir, tmp_path):
    runs = tmp_path / "shared-runs"
    script = (readme_recipe().replace("postgresql://user:password@db-host:5432/sweeps", pg.url)
              .replace("/shared/runs", str(runs)).replace("for gpu in 0 1 2 3", "for gpu in 0 1")
              .replace("--trials 100", "--trials 4 " + TINY_SET.format(data=data_dir)))
    assert script.count(pg.url) == 1 and "for gpu in 0 1;" in script  # the recipe still reads as the test expects
    env = {**os.environ, **WORKER_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    typed = tmp_path / "recipe.sh"  # as typed into a shell: the export is no command line of its own
    typed.write_text(script)
    typed.chmod(0o600)
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=watch_command_lines, args=(stop, seen), daemon=True)
    watcher.start()
    try:
        done = subprocess.run(["bash", "-e", str(typed)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=240)
    finally:
        stop.set()
        watcher.join()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert output.count("worker done: ") == 2 and "Finished: 4 of 4 trials done" in output
    # the password: on no command line while it ran, in no file the sweep wrote, in nothing it printed
    assert seen and not [line for line in seen if PASSWORD in line]
    leaks = [p for p in runs.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert len(list(runs.glob("*/config.json"))) == 4  # it did look at the runs' files
    assert not leaks and PASSWORD not in output and "postgres:***@" in output
    best = re.search(r"best: trial (\d+), validation accuracy ([\d.]+)% at its last epoch, run (\S+)", output)
    test = re.search(r"its test accuracy: ([\d.]+)%", output).group(1)
    check_the_page_and_the_runs_page(pg.url, runs, data_dir, *best.groups(), test)


def check_the_page_and_the_runs_page(url: str, runs: Path, data_dir: Path, number: str, value: str, run_id: str,
                                     test: str) -> None:
    """The Sweeps page (the storage from $CIFAR_SWEEP_STORAGE) and the Runs page show what `sweep show` said."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    saved = {k: os.environ.get(k) for k in ("CIFAR_SWEEP_STORAGE", "CIFAR_RUNS_DIR", "CIFAR_DATA_DIR")}
    os.environ.update(CIFAR_SWEEP_STORAGE=url, CIFAR_RUNS_DIR=str(runs), CIFAR_DATA_DIR=str(data_dir))
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).switch_page("app_pages/sweeps.py").run()
        assert not at.exception
        metrics = {m.label: m.value for m in at.metric}
        assert (metrics["Best trial"], metrics["Best validation accuracy"]) == (f"#{number}", f"{value}%")
        assert metrics["Its test accuracy"] == f"{test}%"
        shown = "\n".join(str(e.value) for kind in (at.markdown, at.caption, at.error) for e in kind)
        assert PASSWORD not in shown and "postgres:***@127.0.0.1" in shown
        at.query_params["run"] = run_id
        at.switch_page("app_pages/runs.py").run()
        assert not at.exception and at.selectbox(key="run_pick").value == run_id
        assert [link.proto.label for link in at.get("page_link") if "sweep" in link.proto.label] == \
            [f"Trial {number} of sweep lr-wd"]
        row = at.dataframe[0].value.set_index("id").loc[run_id]
        assert f"{row['best_test_acc']:.2f}" == test
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        st.cache_resource.clear()


VIEWER = """
import sys, time
time.time = lambda now=time.time: now() + 3600  # a host whose clock is an hour fast (and TZ far away)
from cifar_app.sweeps import claims, spec, views
from cifar_app.sweeps.storage import SweepStorage
storage = SweepStorage(sys.argv[1])
until = time.monotonic() + float(sys.argv[2])
while time.monotonic() < until:  # what the Sweeps page does on every redraw
    study, sweep = spec.load_sweep("live", storage)
    claims.look_after(study, storage)
    views.sweep_state(study, sweep), views.trial_rows(study, sweep)
    time.sleep(0.5)
"""


def test_live_trials_are_never_failed_and_a_killed_worker_s_trial_is_failed_by_the_heartbeat(pg, data_dir, tmp_path):
    """Two workers with runs folders of their own (as on two machines that share no folder) and a viewer with
    its own runs folder, a time zone fourteen hours ahead and a clock an hour fast, for three grace periods: no
    live trial is failed (the database's clock judges). Then one worker is killed: its trial is failed within the
    grace period and the other worker runs it again."""
    storage = SweepStorage(tmp_path / "viewer-runs", pg.url)
    grace = 4
    sweep_spec.create_sweep(tiny_spec(data_dir, name="live", trials=100, base={"epochs": 3, "batch_size": 64},
                                      heartbeat_s=1, grace_s=grace), storage)
    study, _ = sweep_spec.load_sweep("live", storage)
    folders = [tmp_path / "runs-a", tmp_path / "runs-b"]
    victim, survivor = start_workers(storage, "live", 2, tmp_path / "logs", runs_dirs=folders)
    try:
        viewer = subprocess.run([sys.executable, "-c", VIEWER, str(tmp_path / "viewer-runs"), str(3 * grace)],
                                cwd=ROOT, env={**os.environ, **WORKER_ENV, **storage.worker_env(),
                                               "TZ": "Pacific/Kiritimati"}, capture_output=True, text=True, timeout=120)
        assert viewer.returncode == 0, viewer.stderr[-2000:]
        failed = study.get_trials(states=(TrialState.FAIL,))
        assert failed == [], f"{[(t.number, t.user_attrs) for t in failed]}\n{logs(tmp_path / 'logs')}"
        assert all(list(folder.glob("*/config.json")) for folder in folders)  # both took trials meanwhile

        deadline = time.monotonic() + 60
        while not (mine := [t for t in study.get_trials(states=(TrialState.RUNNING,))
                            if t.user_attrs.get("worker", {}).get("pid") == victim.pid and t.intermediate_values]):
            assert time.monotonic() < deadline and victim.poll() is None, logs(tmp_path / "logs")
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        victim.wait()
        while study._storage.get_trial(mine[0]._trial_id).state == TrialState.RUNNING:
            assert time.monotonic() - killed < grace + 3, f"not failed in time\n{logs(tmp_path / 'logs')}"
            time.sleep(0.1)
        assert time.monotonic() - killed >= grace - 1.5, "failed before its heartbeat was silent for the grace period"
        while not (again := [t for t in study.get_trials() if t.user_attrs.get("rerun_of") == mine[0].number
                             and "worker" in t.user_attrs]):  # claimed: its worker names itself last
            assert time.monotonic() - killed < 60 and survivor.poll() is None, logs(tmp_path / "logs")
            time.sleep(0.1)
    finally:
        sweep_spec.request_stop(study)
    assert wait_all([survivor, victim], timeout=60) == [0, -signal.SIGKILL], logs(tmp_path / "logs")
    dead = study._storage.get_trial(mine[0]._trial_id)
    assert again[0].user_attrs["worker"]["pid"] == survivor.pid and again[0].params == dead.params
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.number for t in failed if "interrupted" not in t.user_attrs] == [dead.number]  # no other: the stop's
    from cifar_app.sweeps.views import trial_rows
    reason = trial_rows(study, sweep_spec.load_sweep("live", storage)[1])[dead.number]["reason"]
    assert f"heartbeat stopped for over {grace} s" in reason and f"trial {again[0].number} runs it again" in reason


def test_a_postgresql_restart_mid_sweep_loses_no_completed_trial(pg, data_dir, tmp_path):
    storage = SweepStorage(tmp_path / "runs", pg.url)
    sweep_spec.create_sweep(tiny_spec(data_dir, name="restart", trials=6, base={"epochs": 3, "batch_size": 64},
                                      heartbeat_s=1, grace_s=5), storage)
    study, _ = sweep_spec.load_sweep("restart", storage)
    workers = start_workers(storage, "restart", 2, tmp_path / "logs")
    deadline = time.monotonic() + 60
    while not any(t.intermediate_values for t in study.get_trials(states=(TrialState.RUNNING,))):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers), logs(tmp_path / "logs")
        time.sleep(0.05)
    pg.restart()
    assert wait_all(workers, timeout=180) == [0, 0], logs(tmp_path / "logs")
    assert "Traceback" not in logs(tmp_path / "logs")
    study, spec = sweep_spec.load_sweep("restart", storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6  # the budget, whatever the restart interrupted was run again
    store = RunStore(storage.runs_dir)
    for trial in complete:  # each intact: its value is its run's last epoch, and its run finished
        run = store.get(trial.user_attrs["run_id"])
        assert run.status() == "finished" and run.metrics()[-1]["val_acc"] == trial.value
        assert sorted(trial.intermediate_values) == [1, 2, 3]
