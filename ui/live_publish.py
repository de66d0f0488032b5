"""What the browser draws of a training job between Streamlit reruns, published as a small JSON file.

A tab that reruns a fragment once a second to show a run's progress costs the training run dearly: on 2 cores each
rerun redraws the page in the browser (tens of milliseconds) and runs Streamlit's script machinery on the server,
for every open tab (docs/performance.md, scripts/watch_cost.py). So the Train page's live part polls this file
instead (ui/live_part.js): one `LivePublisher` per server process writes the job's state here when it changes (a
couple of times a second while a run trains), Streamlit serves it as a static file, and every tab reads it once a
second and draws it itself. The state is built once per change and shared by every tab.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from cifar_app.engine.jobs import JobManager, JobSnapshot
from ui.charts import training as charts
from ui.common import duration, job_line, run_fraction, stop_wait

log = logging.getLogger(__name__)

# Streamlit serves <the entry script's folder>/static at app/static/ (server.enableStaticServing)
STATIC = Path(__file__).resolve().parent.parent / "static"
FOLDER = STATIC / "live"
URL = "app/static/live"  # relative, so that it works under a server.baseUrlPath too
PUBLISH_S = 0.4  # how often the publisher looks for a new state (a report arrives every quarter second)
POINTS = 400  # the running loss's rows: enough for its shape, small to send each second
LR_POINTS = 150  # the learning rate is smooth: fewer rows draw it as well
OLD_FILE_S = 24 * 3600.0  # a file left by a server that ended is removed after this


def progress_state(snap: JobSnapshot) -> dict[str, Any]:
    """The progress bar's fraction and text, the batch it shows, and the line of pace and times (HTML)."""
    p, e = snap.progress, snap.evaluating
    wait = stop_wait(snap)
    stopping = (f" (stopping within one batch, {wait})" if wait else " (stopping within one batch)") \
        if snap.stop_requested else ""
    if p is None and e is None:
        return {"fraction": 0.0, "text": f"{snap.message or 'Starting'}…{stopping}", "batch": None, "line": ""}
    if e is not None:  # the end of an epoch: the held-out images, batch by batch
        fraction, text = e.done / max(e.total, 1), (f"Epoch {e.epoch} of {e.epochs}: evaluating on the {e.split} "
                                                     f"images, {e.done:,} of {e.total:,}{stopping}")
    else:
        fraction, text = p.batch / p.batches, f"Epoch {p.epoch} of {p.epochs}: training, batch {p.batch} of " \
                                              f"{p.batches}{stopping}"
    parts = [f"<b>{p.images_per_s:,.0f}</b> images/s"] if p is not None else []
    parts.append(f"<b>{duration(e.elapsed_s if e is not None else p.elapsed_s)}</b> elapsed")
    if e is None:
        parts.append(f"this epoch's training ends in <b>{duration(p.epoch_eta_s)}</b>")
    parts.append(f"the run ends in <b>{duration(e.run_eta_s if e is not None else p.run_eta_s)}</b>")
    return {"fraction": fraction, "text": text, "batch": p.batch if e is None and p is not None else None,
            "line": " · ".join(parts)}


def live_state(snap: JobSnapshot, points: int = POINTS) -> dict[str, Any]:
    """Everything the live part draws, as JSON-ready values: progress, pace, and the running charts' rows."""
    frame = charts.loss_frame(snap.loss_rows())
    stride = max(1, -(-len(frame) // points))
    loss = charts.thinned(frame, points)
    lr, lr_log = charts.lr_frame(frame, min(points, LR_POINTS))
    progress, fraction = progress_state(snap), run_fraction(snap)
    return {
        "job": snap.job_id, "version": snap.version, "status": snap.status, "epochs": len(snap.epochs),
        "progress": progress, "line": progress["line"], "stride": stride,
        "loss": [[round(x, 5), round(y, 5)] for x, y in zip(loss["position"], loss["loss"])],
        "lr": [[round(x, 5), y] for x, y in zip(lr["position"], lr["lr"])], "lr_log": lr_log,
        "sidebar": {"fraction": fraction, "text": f"{job_line(snap)} · {fraction:.0%}" if snap.progress else job_line(snap)},
    }


class LivePublisher:
    """Writes the job's live state to a JSON file of its own whenever it changes; one per server process."""

    def __init__(self, manager: JobManager, folder: Path = FOLDER, poll_s: float = PUBLISH_S):
        self.manager, self.folder, self.poll_s = manager, folder, poll_s
        self.name = f"job-{os.getpid()}-{secrets.token_hex(6)}.json"
        self.ok = True  # False when the folder cannot be written: the page then falls back on reruns
        self._version: tuple[int, int] | None = None
        self._clear_old()
        self.publish()
        threading.Thread(target=self._loop, name="live-publisher", daemon=True).start()

    @property
    def url(self) -> str:
        return f"{URL}/{self.name}"

    def publish(self) -> None:
        """Write the job's state if it changed since the last write."""
        snap = self.manager.snapshot()
        if self._version == (snap.job_id, snap.version):
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{self.name}.tmp"
            tmp.write_text(json.dumps(live_state(snap), separators=(",", ":")))
            os.replace(tmp, self.folder / self.name)  # a reader sees the old state or the new one
            self._version, self.ok = (snap.job_id, snap.version), True
        except OSError as error:
            if self.ok:
                log.warning("cannot publish the live state in %s (%s): tabs will rerun instead", self.folder, error)
            self.ok = False

    def _loop(self) -> None:
        while True:
            time.sleep(self.poll_s)
            try:
                self.publish()
            except Exception:  # a bad state must not end the thread every tab relies on
                log.exception("publishing the live state failed")

    def _clear_old(self) -> None:
        try:
            for path in self.folder.glob("job-*.json"):
                if time.time() - path.stat().st_mtime > OLD_FILE_S:
                    path.unlink(missing_ok=True)
        except OSError:
            pass
