"""The benchmark and the speed probe the Train page uses: the run's own step, timed, and refused before
anything is allocated when it cannot fit."""

import math
import re
import time

import pytest
import torch

from cifar_app.engine import bench_cli
from cifar_app.engine import speed as probe
from cifar_app.engine.roofline import OpTimer
from cifar_app.engine.schedule import EVAL_COST
from cifar_app.config import TrainConfig


def test_the_probe_times_a_run_s_own_step_and_the_cache_keeps_it(monkeypatch):
    config = TrainConfig(blocks=2, width=4, k=2, batch_size=16, data_dir="")
    speed = probe.measure_images_per_s(config, "cpu", batches=2)
    assert math.isfinite(speed) and speed > 0
    cache = probe.SpeedCache()
    first = cache.measure(config, torch.device("cpu"))
    monkeypatch.setattr(probe, "measure_images_per_s", lambda *args, **kwargs: pytest.fail("measured twice"))
    assert cache.measure(config, torch.device("cpu")) == first == cache.get(config, torch.device("cpu"))
    assert cache.get(config.replace(width=8), torch.device("cpu")) is None  # another shape, another speed


def test_one_slow_batch_does_not_set_a_cpu_probe_s_speed():
    """A small model's batch takes a fifth of a second on a CPU, and the page being drawn beside the probe can slow
    one; the probe times on for PROBE_MIN_S, so its speed is the steady pace, not that batch's."""
    calls = []

    def step() -> int:  # 100 images; the first timed batch 0.3 s (disturbed), then 0.01 s each
        calls.append(1)
        time.sleep(0.3 if len(calls) == 2 else 0.01)
        return 100

    speed = probe._time(step, torch.device("cpu"), warmup=1, repeats=1, min_s=probe.PROBE_MIN_S)
    steady = 100 / 0.01
    assert speed > 0.6 * steady, f"{speed:.0f} images/s, against a steady {steady:.0f}"
    assert len(calls) > 10


def test_the_probe_measures_with_the_threads_the_run_will_use():
    """The Train page's estimate is for the run's own process: its CPU threads (a setting) set the speed measured."""
    config = TrainConfig(blocks=2, width=4, k=2, batch_size=16, data_dir="")
    seen = []
    original = probe._measure

    def measuring(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        probe._measure = measuring
        cache = probe.SpeedCache()
        cache.speed(config.replace(threads=1), torch.device("cpu"), may_measure=True)
        cache.speed(config, torch.device("cpu"), may_measure=True)  # threads 0: this process's own
        assert seen == [1, 2] and torch.get_num_threads() == 2  # measured apart; the server's threads restored
        assert cache.get(config.replace(threads=1, batch_size=16), torch.device("cpu")) is not None
    finally:
        probe._measure = original
        torch.set_num_threads(before)


def test_the_next_run_is_estimated_from_the_last_finished_run_of_its_speed_on_this_machine(tmp_path):
    """A finished run's pace (its training and evaluations over its whole time) estimates the next run of the same
    shape; another shape, a budgeted run or another machine's run does not."""
    from conftest import tiny_cifar, tiny_config

    from cifar_app.engine.loop import train
    from cifar_app.store.runs import RunStore

    store, cpu = RunStore(tmp_path), torch.device("cpu")
    config = tiny_config(epochs=2, threads=1)
    assert probe.recent_pace(store, config, cpu) is None
    run = train(config, data=tiny_cifar(), store=store).run
    pace, found = probe.recent_pace(store, config.replace(epochs=5, lr=0.1), cpu)  # the recipe does not set speed
    meta = run.meta()
    work = (run.config_record()["train_images"] + 10_000 * EVAL_COST) * 2  # the estimate counts CIFAR-10's test set
    assert found.id == run.id and pace == pytest.approx(work / meta["seconds"])
    same = config.replace(train_subset=run.config_record()["train_images"])  # a run like it takes what it took
    assert probe.estimate_seconds(same, pace)[1] == pytest.approx(meta["seconds"])
    assert probe.recent_pace(store, config.replace(width=16), cpu) is None
    assert probe.recent_pace(store, config, cpu, host="another-machine") is None
    train(config.replace(time_budget=30.0), data=tiny_cifar(), store=store)  # newer, but its last epoch is partial
    assert probe.recent_pace(store, config, cpu)[1].id == run.id


def test_the_probe_refuses_what_cannot_fit_before_allocating():
    device = torch.device("cpu")
    too_many = TrainConfig(blocks=30, k=16, width=256, data_dir="")
    assert "more than the 200 M" in probe.probe_problem(too_many, device)
    valid_but_huge = TrainConfig(blocks=30, k=4, width=64, batch_size=4096, data_dir="")
    assert valid_but_huge.validate() == []
    problem = probe.probe_problem(valid_but_huge, device)
    assert "GiB" in problem and "a speed probe takes at most" in problem
    with pytest.raises(ValueError, match="GiB"):
        probe.measure_images_per_s(valid_but_huge, device)
    assert probe.probe_problem(TrainConfig(blocks=2, width=4, k=2, data_dir=""), device) is None


def test_an_epoch_estimate_counts_the_training_split_and_the_evaluations():
    config = TrainConfig(epochs=10, data_dir="")
    epoch, run = probe.estimate_seconds(config, 1000.0)
    assert run == pytest.approx(10 * epoch)
    # holding out 5,000 images trains on fewer but evaluates them every epoch: cheaper by 2/3 of 5,000
    held_out, _ = probe.estimate_seconds(config.replace(val_size=5000), 1000.0)
    assert held_out == pytest.approx(epoch - 5000 * (1 - EVAL_COST) / 1000)


def test_the_benchmark_prints_both_paths_and_checks_they_compute_the_same(capsys):
    code = bench_cli.main(["--preset", "quick", "--device", "cpu", "--width", "4", "--blocks", "2", "--batch-size", "16",
                       "--batches", "1", "--workers", "0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "same math" in out and "MISMATCH" not in out
    assert "coursework: DataLoader+PIL, fp32, loop" in out and "project: tensors" in out
    assert "training-step speedup, preset quick on cpu:" in out
    assert "recording off" in out and "recording on" in out
    share = re.search(r"recording overhead, preset quick on cpu: ([\d.]+)% of a training epoch", out)
    assert share and 0 < float(share.group(1)) < 100
    roof = re.search(r"roofline share, preset quick on cpu: ([\d.]+)% of this machine's (bf16|fp32) matrix multiply "
                     r"\(\d+ threads?; target 50%\)", out)
    assert roof and 0 < float(roof.group(1)) < 100, out
    if float(roof.group(1)) < 50:  # a 4-channel network is far below the roof: the per-op profile says why
        assert "3c. what holds the step below 50% of the roof" in out
        assert "aten.convolution_backward" in out and "operators without (normalisation" in out


def test_the_roofline_counts_the_flops_a_step_runs_grouped_convolutions_too():
    x = torch.randn(4, 6, 8, 8, requires_grad=True)
    w = torch.randn(4 * 5, 6, 3, 3, requires_grad=True)  # per-sample kernels: one group of 5 outputs per image
    timer = OpTimer(torch.device("cpu"))
    with timer:
        y = torch.nn.functional.conv2d(x.reshape(1, 24, 8, 8), w, padding=1, groups=4)
        y.sum().backward()
        torch.mm(torch.randn(3, 7), torch.randn(7, 2))
    forward = 2 * 4 * 5 * 6 * 9 * 8 * 8  # 2 FLOPs per multiply-add: 4 images, 5 outputs, 6 inputs, 3x3, 8x8
    assert timer.rows["aten.convolution"].flops == forward
    assert timer.rows["aten.convolution_backward"].flops == 2 * forward  # the input's gradient and the weight's
    assert timer.rows["aten.mm"].flops == 2 * 3 * 7 * 2
    assert timer.rows["aten.convolution"].seconds > 0 and timer.rows["aten.sum"].flops == 0
