"""The benchmark and the speed probe the Train page uses: the run's own step, timed, and refused before
anything is allocated when it cannot fit."""

import math
import re

import pytest
import torch

from cifar_app.engine import bench_cli
from cifar_app.engine import speed as probe
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
