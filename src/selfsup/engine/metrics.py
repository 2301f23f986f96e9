"""``metrics.jsonl``: one JSON object per logged step (loss, learning rate, images/s, elapsed time and the
method's and the collapse monitor's metrics), appended by the main process.

A resumed run continues from a checkpoint, which may be older than the last record (a run stopped between
checkpoints, or an extension that continues from the state before the final decay): the records after the
checkpoint's step are moved to ``metrics.superseded.jsonl`` as the log is opened, so ``metrics.jsonl`` is one
history without repeated or abandoned steps."""
from __future__ import annotations

import json
import time
from pathlib import Path

from selfsup.engine.checkpoint import LoopState
from selfsup.files import atomic_path
from selfsup.runs import METRICS_FILE


class MetricsLog:
    """Appends records to ``run_dir``'s metrics file when ``enabled`` (the main rank); every rank measures
    images/s, over the steps since the previous record."""

    def __init__(self, run_dir: Path, state: LoopState, enabled: bool):
        if enabled:
            supersede_after(Path(run_dir) / METRICS_FILE, state.step)
        self.file = open(Path(run_dir) / METRICS_FILE, "a") if enabled else None
        self.last_time, self.last_images = time.perf_counter(), state.images_seen

    def record(self, state: LoopState, loss: float, lr: float, metrics: dict[str, float]) -> dict:
        now = time.perf_counter()
        rate = (state.images_seen - self.last_images) / max(1e-9, now - self.last_time)
        self.last_time, self.last_images = now, state.images_seen
        record = {"step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr, "images_per_s": rate,
                  "elapsed_s": state.elapsed, **metrics}
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        return record

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


SUPERSEDED_FILE = "metrics.superseded.jsonl"


def supersede_after(path: Path, step: int) -> int:
    """Move the records of ``path`` after ``step`` to :data:`SUPERSEDED_FILE` beside it; returns how many."""
    if not path.is_file():
        return 0
    keep, moved = [], []
    for line in filter(str.strip, path.read_text().splitlines()):
        (keep if json.loads(line).get("step", 0) <= step else moved).append(line)
    if moved:
        with open(path.parent / SUPERSEDED_FILE, "a") as stream:
            stream.write("".join(line + "\n" for line in moved))
        with atomic_path(path) as tmp:
            Path(tmp).write_text("".join(line + "\n" for line in keep))
    return len(moved)
