"""What the sidebar and the live part say about the job, from its snapshot (ui.common.job_line, ui.live_publish):
the epoch the main view shows, and how long a Stop waits for a long batch."""

from cifar_app.config import preset
from cifar_app.engine.jobs import JobSnapshot
from cifar_app.events import BatchEvent, EvalEvent
from ui.common import config_line, job_line, sci
from ui.live_publish import progress_state


def snapshot(batch_size: int = 128, images_per_s: float = 500.0, **changes) -> JobSnapshot:
    # the last batch report came from epoch 1: epoch 2's batches ended between two reports
    progress = BatchEvent(1, 2, 7, 7, 2.1, 1e-3, images_per_s, 12.0, 12.0, 0.0, 30.0)
    return JobSnapshot(job_id=1, status="running", config=preset("quick", batch_size=batch_size), progress=progress,
                       **changes)


def test_the_sidebar_names_the_epoch_being_evaluated_as_the_main_view_does():
    snap = snapshot(evaluating=EvalEvent(2, 2, "test", 3000, 10000, 20.0, 5.0))
    assert job_line(snap) == "Running: epoch 2 of 2, evaluating"
    assert progress_state(snap)["text"].startswith("Epoch 2 of 2: evaluating")
    assert job_line(snapshot()) == "Running: epoch 1 of 2"


def test_a_stop_that_waits_for_a_long_batch_says_how_long():
    long = snapshot(batch_size=8192, images_per_s=280.0, stop_requested=True)
    assert job_line(long) == ("Stopping after this batch (up to 29 s: one batch of 8,192 images takes that long "
                              "here)…")
    assert "stopping within one batch, up to 29 s" in progress_state(long)["text"]
    assert job_line(snapshot(stop_requested=True)) == "Stopping after this batch…"  # a quarter second: nothing to say


def test_numbers_read_as_people_write_them():
    assert [sci(v) for v in (1.0, 0.2, 4e-3, 1.5e-4, 0.0, 5e-4)] == ["1", "0.2", "4e-3", "1.5e-4", "0", "5e-4"]
    line = config_line(preset("quick", epochs=1, optimizer="adamw", lr=1.0))
    assert "adamw lr 1," in line and line.endswith("· 1 epoch")
    assert config_line(preset("quick")).endswith("· 3 epochs")
