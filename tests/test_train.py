import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from cifar_app.analysis.dynamics import load_records
from cifar_app.store.report import run_row
from cifar_app.store.runs import RunStore
from cifar_app.events import BatchEvent, EpochEvent, EvalEvent, ResumeEvent, StatusEvent
from cifar_app.engine.schedule import lr_factor
from cifar_app.engine.cli import main
from cifar_app.engine.loop import train
from cifar_app.engine.reporter import Pace
from conftest import ROOT, tiny_cifar, tiny_config, write_batches


def test_a_tiny_run_learns_and_reports_every_epoch(tiny_data):
    events = []
    result = train(tiny_config(epochs=4), data=tiny_data, on_event=events.append, report_interval_s=0)
    assert result.status == "finished" and result.reason == ""
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert [e.epoch for e in epochs] == [1, 2, 3, 4]
    assert epochs[-1].train_loss < epochs[0].train_loss * 0.6
    assert epochs[-1].test_acc > 60  # ten classes: chance is 10%
    batches = [e for e in events if isinstance(e, BatchEvent)]
    assert batches and all(1 <= b.batch <= b.batches == 6 for b in batches)
    assert all(b.images_per_s > 0 and b.run_eta_s >= 0 for b in batches)
    assert isinstance(events[0], StatusEvent)
    assert result.best.test_acc == max(e.test_acc for e in epochs)
    assert "best test accuracy" in "\n".join(result.summary_lines())


def test_the_same_seed_gives_the_same_run(tiny_data):
    first = train(tiny_config(epochs=1, augment=True), data=tiny_data)
    second = train(tiny_config(epochs=1, augment=True), data=tiny_data)
    assert first.history[0].train_loss == pytest.approx(second.history[0].train_loss, rel=1e-5)


def test_the_stop_flag_stops_within_one_batch_and_keeps_the_weights(tiny_data, tmp_path):
    stop = threading.Event()
    seen = []

    def on_event(event):
        if isinstance(event, BatchEvent) and event.epoch == 2:
            seen.append(event.batch)
            stop.set()

    store = RunStore(tmp_path)
    result = train(tiny_config(epochs=5), data=tiny_data, on_event=on_event, stop=stop, store=store,
                   report_interval_s=0)
    assert result.status == "stopped"
    assert seen == [seen[0]]  # no batch ran after the one that asked to stop
    assert f"epoch 2, batch {seen[0]} of 6" in result.reason
    saved = result.run.load_checkpoint("last")
    assert (saved["epoch"], saved["batch"]) == (1, seen[0])
    assert result.run.status() == "stopped"


def test_a_diverging_run_ends_with_a_reason(tiny_data, tmp_path):
    result = train(tiny_config(optimizer="sgd", lr=10, momentum=0.99, epochs=8), data=tiny_data,
                   store=RunStore(tmp_path))
    assert result.status == "failed"
    assert "diverged" in result.reason and "Lower the learning rate" in result.reason
    assert result.run.meta()["status"] == "failed" and "diverged" in result.run.meta()["reason"]


def test_a_validation_split_picks_the_best_epoch(tiny_data):
    result = train(tiny_config(epochs=3, val_size=50), data=tiny_data)
    assert all(e.val_acc is not None for e in result.history)
    assert result.selection == "validation"
    assert result.best.val_acc == max(e.val_acc for e in result.history)
    assert "validation accuracy" in "\n".join(result.summary_lines())


def test_resume_after_a_stop_finishes_the_planned_epochs(tiny_data, tmp_path):
    stop = threading.Event()
    store = RunStore(tmp_path)
    on_event = lambda e: stop.set() if isinstance(e, EpochEvent) and e.epoch == 2 else None  # noqa: E731
    first = train(tiny_config(epochs=4), data=tiny_data, on_event=on_event, stop=stop, store=store)
    assert first.status == "stopped" and [e.epoch for e in first.history] == [1, 2]
    again = train(tiny_config(), data=tiny_data, resume=first.run)
    assert again.status == "finished"
    assert [row["epoch"] for row in first.run.metrics()] == [1, 2, 3, 4]
    straight = train(tiny_config(epochs=4), data=tiny_data)
    # the resumed run is the run that never stopped
    assert [r["train_loss"] for r in first.run.metrics()] == pytest.approx(
        [e.train_loss for e in straight.history], rel=1e-4)


def test_lr_schedules():
    assert lr_factor("none", 50, 100, 10) == 1
    assert lr_factor("onecycle", 0, 100, 10) == pytest.approx(0.04)
    assert lr_factor("onecycle", 10, 100, 10) == pytest.approx(1)
    assert lr_factor("onecycle", 100, 100, 10) == pytest.approx(0)
    assert lr_factor("cosine", 55, 100, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 0, 100, 10) == pytest.approx(0.1)


def test_the_cli_end_to_end_on_tiny_data(tmp_path, capsys):
    write_batches(tmp_path / "data")
    code = main(["--preset", "quick", "--data-dir", str(tmp_path / "data"), "--blocks", "3", "--epochs", "2",
                 "--batch-size", "50", "--warmup-epochs", "0.5", "--runs-dir", str(tmp_path / "runs"),
                 "--name", "cli test"])
    out = capsys.readouterr().out
    assert code == 0, out
    for line in ("epoch 1/2  training loss", "epoch 1/2  training accuracy", "epoch 2/2  test accuracy",
                 "images/s", "best test accuracy", "final test accuracy"):
        assert line in out, out
    runs = RunStore(tmp_path / "runs").runs()
    assert len(runs) == 1 and runs[0].status() == "finished" and runs[0].name == "cli test"
    assert [r["epoch"] for r in runs[0].metrics()] == [1, 2]


def test_the_cli_explains_missing_data_and_bad_values(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "--no-save"]) == 1
    assert "CIFAR-10 was not found" in capsys.readouterr().out
    assert main(["--batch-size", "0", "--lr", "-1"]) == 1
    out = capsys.readouterr().out
    assert "batch size must be at least 1" in out and "learning rate" in out


def test_a_stop_mid_epoch_then_resume_is_the_run_that_never_stopped(tiny_data, tmp_path):
    stop = threading.Event()
    on_event = lambda e: stop.set() if isinstance(e, BatchEvent) and (e.epoch, e.batch) == (2, 3) else None  # noqa: E731
    first = train(tiny_config(epochs=3, augment=True), data=tiny_data, on_event=on_event, stop=stop,
                  store=RunStore(tmp_path), report_interval_s=0)
    assert "epoch 2, batch 3 of 6" in first.reason
    again = train(tiny_config(), data=tiny_data, resume=first.run)
    straight = train(tiny_config(epochs=3, augment=True), data=tiny_data)
    assert again.status == "finished"
    assert [r["train_loss"] for r in first.run.metrics()] == pytest.approx(
        [e.train_loss for e in straight.history], rel=1e-4)


def test_resuming_a_finished_run_changes_nothing(tiny_data, tmp_path):
    run = train(tiny_config(epochs=1), data=tiny_data, store=RunStore(tmp_path)).run
    again = train(tiny_config(), data=tiny_data, resume=run)
    assert again.status == "finished" and "already finished" in again.reason
    assert run.status() == "finished" and len(run.metrics()) == 1


def test_a_fork_cannot_change_the_network(tiny_data, tmp_path):
    from cifar_app.config import ConfigError

    parent = train(tiny_config(epochs=1, name="p"), data=tiny_data, store=RunStore(tmp_path)).run
    with pytest.raises(ConfigError, match="width must stay as they were \\(width 8 -> 16\\)"):
        train(tiny_config(epochs=2, width=16), data=tiny_data, store=RunStore(tmp_path), fork=(parent, "last"))
    assert len(RunStore(tmp_path).runs()) == 1  # nothing written for the refused fork


def test_the_cli_refuses_to_resume_with_other_hyperparameters(tmp_path, capsys):
    write_batches(tmp_path / "data")
    common = ["--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")]
    tiny = ["--blocks", "2", "--width", "8", "--k", "2", "--batch-size", "50", "--device", "cpu", "--quiet"]
    assert main([*common, *tiny, "--epochs", "1"]) == 0
    (run,) = RunStore(tmp_path / "runs").runs()
    capsys.readouterr()
    assert main([*common, "--resume", run.id, "--lr", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "--lr cannot change" in out and f"--fork {run.id}" in out
    assert main([*common, "--resume", run.id]) == 1
    assert "finished all its epochs" in capsys.readouterr().out
    assert main([*common, "--fork", run.id, "--width", "16", "--epochs", "2"]) == 1
    assert "width 8 -> 16" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; run on a GPU machine)")
def test_cuda_graph_training_matches_eager_and_a_failed_capture_changes_nothing(tiny_data):
    from cifar_app.model.network import build_model
    from cifar_app.model.step import GraphedStep, make_optimizer

    graphed = train(tiny_config(device="cuda", epochs=2, cuda_graphs=True), data=tiny_data)
    eager = train(tiny_config(device="cuda", epochs=2, cuda_graphs=False), data=tiny_data)
    assert graphed.status == eager.status == "finished"
    assert [e.train_loss for e in graphed.history] == pytest.approx([e.train_loss for e in eager.history], rel=0.05)
    # Adam without capturable=True refuses capture: the warm-up steps must be undone all the same
    config = tiny_config(device="cuda", optimizer="adam")
    model = build_model(config, "cuda")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(32, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (32,), device="cuda")
    with pytest.raises(RuntimeError):
        GraphedStep(model, make_optimizer(config, model), torch.nn.CrossEntropyLoss(), x, y, torch.device("cuda"), True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_stop_during_the_test_pass_stops_there_and_resume_evaluates_that_epoch(tmp_path):
    data = tiny_cifar(test_per_class=110)  # 1,100 test images: two evaluation batches
    stop = threading.Event()
    evaluating = []

    def on_event(event):
        if isinstance(event, EvalEvent):
            evaluating.append((event.epoch, event.split, event.done, event.total))
            if event.epoch == 2 and event.done < event.total:
                stop.set()

    first = train(tiny_config(epochs=3), data=data, on_event=on_event, stop=stop, store=RunStore(tmp_path),
                  report_interval_s=0)
    assert first.status == "stopped" and "while evaluating epoch 2" in first.reason
    assert evaluating[-1] == (2, "test", 1000, 1100)  # the page can say where it is; nothing ran after Stop
    saved = first.run.load_checkpoint("last")
    assert (saved["epoch"], saved["batch"]) == (1, 6)  # epoch 2 trained, not yet evaluated
    assert [r["epoch"] for r in first.run.metrics()] == [1]
    trained = saved["accum"]["train_s"]  # epoch 2's training, done before the stop
    events = []
    again = train(tiny_config(), data=data, resume=first.run, on_event=events.append)
    straight = train(tiny_config(epochs=3), data=data)
    assert again.status == "finished"
    rows = first.run.metrics()
    # epoch 2 is one epoch over both sessions: its time includes the training before the stop, and its pace is
    # that training's (the resumed session only evaluated it)
    assert trained > 0 and rows[1]["seconds"] >= trained and rows[1]["images_per_s"] == pytest.approx(
        6 * 32 / trained, rel=1e-3)
    (resumed,) = [e for e in events if isinstance(e, ResumeEvent)]
    assert resumed.where() == "the end of epoch 2 (its evaluation)"
    assert [r["train_loss"] for r in rows] == pytest.approx([e.train_loss for e in straight.history], rel=1e-4)
    assert [r["test_acc"] for r in rows] == pytest.approx([e.test_acc for e in straight.history], rel=1e-4)


def test_an_epoch_s_pace_is_its_images_over_its_training_time_with_checkpoints_inside_it(tiny_data, tmp_path):
    """An epoch of a CPU run outlasts the minute between checkpoints: saving one must not count the training time
    before it twice (the epoch table said 379 images/s for 50,000 images in 77 s)."""
    result = train(tiny_config(epochs=2), data=tiny_data, store=RunStore(tmp_path), checkpoint_every_s=0,
                   report_interval_s=0)
    for row in result.run.metrics():
        trained = 6 * 32 / row["images_per_s"]  # the training time the pace implies
        assert trained <= row["seconds"], f"epoch {row['epoch']}: {trained:.3f} s of training in {row['seconds']:.3f} s"


def test_a_resumed_run_counts_its_earlier_time_and_pace(tiny_data, tmp_path):
    stop = threading.Event()
    before = []

    def on_event(event):
        if isinstance(event, BatchEvent):
            before.append(event)
            if event.epoch == 2:
                stop.set()

    first = train(tiny_config(epochs=3), data=tiny_data, on_event=on_event, stop=stop, store=RunStore(tmp_path),
                  report_interval_s=0)
    after = []
    train(tiny_config(), data=tiny_data, resume=first.run, report_interval_s=0,
          on_event=lambda e: after.append(e) if isinstance(e, BatchEvent) else None)
    assert after[0].elapsed_s > before[-1].elapsed_s  # the clock goes on, it does not restart at 0
    assert after[0].images_per_s > 0 and after[0].run_eta_s > 0  # the earlier pace, from the first report on
    assert first.run.meta()["seconds"] >= after[-1].elapsed_s


def test_pace_is_smoothed_over_a_window():
    pace = Pace(window_s=10)
    t, images, rates = 0.0, 0, []
    for i in range(200):  # 100 images every report, but the reports come 0.05 s and 0.45 s apart in turn
        t += 0.05 if i % 2 else 0.45
        images += 100
        pace.add(t, images)
        if t > 10:
            rates.append(pace.rate())
    assert min(rates) > 0.9 * 400 and max(rates) < 1.1 * 400  # 100 images per 0.25 s on average


def test_a_kill_within_the_first_epoch_loses_at_most_the_checkpoint_interval(tmp_path, capsys):
    write_batches(tmp_path / "data", train_per_class=120)
    runs = tmp_path / "runs"
    base = [sys.executable, "-m", "cifar_app.train", "--data-dir", str(tmp_path / "data"), "--runs-dir", str(runs),
            "--blocks", "3", "--width", "8", "--k", "2", "--batch-size", "10", "--device", "cpu", "--quiet",
            "--checkpoint-every", "0.5"]
    process = subprocess.Popen(base + ["--epochs", "2", "--name", "victim"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline, saved = time.monotonic() + 120, None
    while time.monotonic() < deadline and process.poll() is None:
        found = RunStore(runs).runs()
        if found and found[0].has_checkpoint("last"):
            saved = found[0].load_checkpoint("last")
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert saved is not None and (saved["epoch"], saved["batch"] > 0) == (0, True)  # saved inside epoch 1
    (run,) = RunStore(runs).runs()
    assert run.status() == "interrupted" and run.resume_problem() is None
    saved = run.load_checkpoint("last")  # a later one than the first, maybe: the kill came after the poll
    assert main(["--resume", run.id, "--runs-dir", str(runs), "--data-dir", str(tmp_path / "data"), "--quiet"]) == 0
    assert f"Resuming victim at epoch {saved['epoch'] + 1}, batch {saved['batch'] + 1}" in capsys.readouterr().out
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [1, 2] and run.status() == "finished"
    # the duration on the Runs page counts the time trained before the kill too
    assert run_row(run)["seconds"] >= saved["elapsed_s"] + rows[-1]["seconds"]
    # the per-image record goes on as if the run had never been killed
    assert main(base[3:] + ["--epochs", "2", "--runs-dir", str(tmp_path / "straight")]) == 0  # the later --runs-dir wins
    killed, straight = load_records(run.path), load_records(RunStore(tmp_path / "straight").runs()[0].path)
    assert killed.epochs.tolist() == straight.epochs.tolist() == [1, 2]
    for name in ("correct", "other", "test_pred"):
        np.testing.assert_array_equal(getattr(killed, name), getattr(straight, name))
    for name in ("p_true", "p_other", "test_p_true"):
        np.testing.assert_allclose(getattr(killed, name), getattr(straight, name), rtol=0, atol=1e-3)


def test_a_fork_starts_its_learning_rate_schedule_afresh(tiny_data, tmp_path):
    store = RunStore(tmp_path)
    parent = train(tiny_config(epochs=2), data=tiny_data, store=store).run
    rates = []
    train(tiny_config(epochs=4, schedule="onecycle", warmup_epochs=1.0, lr=0.01), data=tiny_data, store=store,
          fork=(parent, "last"), report_interval_s=0,
          on_event=lambda e: rates.append((e.epoch, e.batch, e.lr)) if isinstance(e, BatchEvent) else None)
    # step 0 of the fork's own 2 epochs: 1/25 of the peak, rising to the peak after one epoch, then falling
    assert rates[0] == (3, 1, pytest.approx(0.04 * 0.01))
    assert max(rates, key=lambda r: r[2])[:2] in ((3, 6), (4, 1))
    assert rates[-1][2] < 0.01 * 0.2


def test_the_automatic_precision_learns_as_well_as_fp32_on_this_cpu(tiny_data):
    from cifar_app.device import cpu_has_native_bf16, use_bf16

    # auto takes bf16 where the CPU computes it natively (faster there), fp32 elsewhere
    assert use_bf16(torch.device("cpu"), "auto") == cpu_has_native_bf16()
    chosen = train(tiny_config(epochs=4, device="cpu", precision="auto"), data=tiny_data)
    exact = train(tiny_config(epochs=4, device="cpu", precision="fp32"), data=tiny_data)
    assert chosen.final.test_acc > 60 and exact.final.test_acc > 60
    assert abs(chosen.final.test_acc - exact.final.test_acc) <= 10
    assert chosen.history[-1].train_loss == pytest.approx(exact.history[-1].train_loss, rel=0.15)
