"""A run's memory, estimated before it starts (engine/memory.py): refused where it cannot fit, a warning past half
of what is free, and the CLI says so before it loads anything."""

import torch

from cifar_app.config import preset
from cifar_app.engine.cli import main as train_cli
from cifar_app.engine.memory import MemoryCheck, check_memory, estimate_bytes

GB = 2**30


def test_the_estimate_grows_with_the_batch_and_the_width():
    quick = preset("quick")
    assert estimate_bytes(quick.replace(batch_size=8192)) > 4 * estimate_bytes(quick)
    assert estimate_bytes(quick.replace(width=64)) > estimate_bytes(quick)
    # the figure measured on the 2-core Xeon (README, "Memory"): quick at batch 128 peaked at 1.3 GB of RSS
    assert 1.3 * GB < estimate_bytes(quick) < 2 * GB


def test_the_sentences_refuse_what_cannot_fit_and_warn_past_half():
    assert MemoryCheck(2 * GB, 10 * GB, "this machine's memory", 4096).problem() is None
    assert MemoryCheck(2 * GB, 10 * GB, "this machine's memory", 4096).warning() is None
    warned = MemoryCheck(6 * GB, 10 * GB, "this machine's memory", 4096).warning()
    assert warned.startswith("this run would take about 6.0 GB of the 10.0 GB free") and "more than half" in warned
    refused = MemoryCheck(12 * GB, 10 * GB, "this machine's memory", 2048)
    assert refused.problem() == ("this run would need about 12.0 GB at its peak, but only 10.0 GB of this machine's "
                                 "memory is free: lower the batch size (a batch of 2048 fits).")
    assert refused.warning() is None


def test_the_batch_that_fits_does():
    check = check_memory(preset("seed", width=128, k=4, batch_size=8192), torch.device("cpu"))
    assert check.problem() and check.fitting_batch < 8192
    smaller = preset("seed", width=128, k=4, batch_size=check.fitting_batch)
    if check.fitting_batch:
        assert estimate_bytes(smaller) <= check.free < estimate_bytes(smaller.replace(batch_size=2 * check.fitting_batch))


def test_the_cli_refuses_before_loading_anything(tmp_path, capsys):
    code = train_cli(["--preset", "seed", "--width", "128", "--k", "4", "--batch-size", "8192", "--device", "cpu",
                      "--data-dir", str(tmp_path / "no-data"), "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 1 and "not started: this run would need about" in out and "no-data" not in out
    assert not (tmp_path / "runs").exists()
