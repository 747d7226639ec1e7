"""The train stage's DVC metrics and plots, written by dvclive.

Every number the trainer reports (the losses named in `pix2pix.model.LOSS_NAMES`, lr,
images/s, and the validation metrics after each epoch) becomes one history file,
`metrics/train/plots/metrics/<name>.tsv` (step, value): `dvc plots` draws one plot per file
on its own scale, so a new loss needs no change here or in dvc.yaml. The run's summary
(latest values, steps, seconds, images/s) is `metrics/train/metrics.json`, the stage's DVC
metric. On resume the history is cut back to the checkpoint's step, so a killed run leaves
no steps twice.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from pix2pix.callbacks import Callback
from pix2pix.files import atomic_write_text

from ..paths import METRICS

LIVE_DIR = METRICS / "train"
SUMMARY = LIVE_DIR / "metrics.json"
HISTORY = LIVE_DIR / "plots" / "metrics"


def truncate_history(folder: Path, upto: int) -> None:
    """Drop the rows logged after step `upto` (the resume point) from every history file."""
    for path in sorted(folder.rglob("*.tsv")) if folder.is_dir() else ():
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows:
            continue
        step = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if int(r[step]) <= upto]
        text = "".join("\t".join(r) + "\n" for r in kept)
        atomic_write_text(path, text)


class DvcLiveHistory(Callback):
    """Streams the trainer's reports into dvclive (metrics summary + one plot per quantity)."""

    def __init__(self, folder: Path = LIVE_DIR):
        self.folder = folder
        self.live: Any = None  # opened at the start of training, when the resume step is known

    def on_train_start(self, info):
        os.environ.setdefault("DVC_NO_ANALYTICS", "1")
        from dvclive import Live

        logging.getLogger("dvclive").setLevel(logging.WARNING)
        resume = info["start_step"] > 0
        if resume:
            truncate_history(self.folder / "plots", info["start_step"])
        # dvcyaml=None: the plots and metrics are declared in the project's dvc.yaml.
        self.live = Live(str(self.folder), resume=resume, save_dvc_exp=False, dvcyaml=None)

    def _log(self, step: int, values: dict[str, float]) -> None:
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)

    def on_step(self, step, logs):
        self._log(step, logs)

    def on_epoch_end(self, epoch, step, metrics):
        self._log(step, {**metrics, "epoch": epoch})

    def on_checkpoint(self, path, step):
        self.live.make_summary()

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write the run summary (latest value of every metric, plus `summary`) and return it."""
        self.live.summary.update(summary)
        self.live.make_summary()
        self.live.end()
        return dict(self.live.summary)
