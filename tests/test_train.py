import subprocess
import sys
import threading

import pytest
import torch

from cifar_app.runs import RunStore
from cifar_app.train import BatchEvent, EpochEvent, StatusEvent, lr_factor, main, train
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


def test_the_cli_end_to_end_on_tiny_data(tmp_path):
    write_batches(tmp_path / "data")
    command = [sys.executable, "-m", "cifar_app.train", "--preset", "quick", "--data-dir", str(tmp_path / "data"),
               "--blocks", "3", "--epochs", "2", "--batch-size", "50", "--warmup-epochs", "0.5",
               "--runs-dir", str(tmp_path / "runs"), "--name", "cli test"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for line in ("epoch 1/2  training loss", "epoch 1/2  training accuracy", "epoch 2/2  test accuracy",
                 "images/s", "best test accuracy", "final test accuracy"):
        assert line in out, out
    runs = RunStore(tmp_path / "runs").runs()
    assert len(runs) == 1 and runs[0].status() == "finished" and runs[0].name == "cli test"
    assert [r["epoch"] for r in runs[0].metrics()] == [1, 2]
    assert "Traceback" not in done.stderr


def test_the_cli_explains_missing_data_and_bad_values(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "cifar_app.train", "--data-dir", str(tmp_path), "--no-save"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "CIFAR-10 was not found" in missing.stdout and "Traceback" not in missing.stderr
    bad = subprocess.run([sys.executable, "-m", "cifar_app.train", "--batch-size", "0", "--lr", "-1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "batch size must be at least 1" in bad.stdout and "learning rate" in bad.stdout


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


def test_the_cli_refuses_to_resume_with_other_hyperparameters(tmp_path):
    write_batches(tmp_path / "data")
    common = ["--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")]
    tiny = ["--blocks", "2", "--width", "8", "--k", "2", "--batch-size", "50", "--device", "cpu", "--quiet"]
    done = subprocess.run([sys.executable, "-m", "cifar_app.train", *common, *tiny, "--epochs", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = RunStore(tmp_path / "runs").runs()
    again = subprocess.run([sys.executable, "-m", "cifar_app.train", *common, "--resume", run.id, "--lr", "0.5"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "--lr cannot change" in again.stdout and f"--fork {run.id}" in again.stdout
    finished = subprocess.run([sys.executable, "-m", "cifar_app.train", *common, "--resume", run.id], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1 and "finished all its epochs" in finished.stdout
    forked = subprocess.run([sys.executable, "-m", "cifar_app.train", *common, "--fork", run.id, "--width", "16",
                             "--epochs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert forked.returncode == 1 and "width 8 -> 16" in forked.stdout and "Traceback" not in forked.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; run on a GPU machine)")
def test_cuda_graph_training_matches_eager_and_a_failed_capture_changes_nothing(tiny_data):
    from cifar_app.model import build_model
    from cifar_app.train import GraphedStep, make_optimizer

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
