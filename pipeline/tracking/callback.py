"""The training callback that streams the trainer's reports into the active MLflow run."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from pix2pix.callbacks import Callback
from pix2pix.errors import first_line

from .run import warn_tracking


class MlflowCallback(Callback):
    """Streams the trainer's reports into the active MLflow run. A tracking outage never stops
    training: while the server is unreachable (restarted, redeployed) metrics are kept in
    memory and sent, in order, once it answers again; sample images of that time are skipped.
    After `outage_limit_s` seconds without an answer, tracking is given up for this run."""

    RETRY_EVERY_S = 5.0  # while down, try again at most this often (each try costs MLflow's HTTP retries)

    def __init__(self, mlflow, outage_limit_s: float | None = None):
        self.mlflow = mlflow
        self.outage_limit_s = (
            float(os.environ.get("P2P_TRACKING_OUTAGE_S", 900)) if outage_limit_s is None else outage_limit_s
        )
        self.pending: list[tuple[dict[str, float], int]] = []
        self.down_since: float | None = None
        self.last_try = 0.0

    def _call(self, name: str, *args, **kwargs) -> None:
        """mlflow.NAME(*args, **kwargs) unless tracking was given up (an earlier call of this
        run failed: the function is looked up only now, so there is no module to look in)."""
        if self.mlflow is None:
            return
        try:
            getattr(self.mlflow, name)(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - a tracking outage never stops training
            warn_tracking(name, e)
            self.mlflow = None

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.mlflow is not None:
            self.pending.append((dict(metrics), step))
            self._flush()

    def _flush(self, force: bool = False) -> None:
        """Send the pending reports in order; on failure keep them (see the class docs)."""
        now = time.monotonic()
        if (
            self.mlflow is None
            or not self.pending
            or (self.down_since is not None and not force and now - self.last_try < self.RETRY_EVERY_S)
        ):
            return
        self.last_try = now
        try:
            while self.pending:
                self.mlflow.log_metrics(self.pending[0][0], step=self.pending[0][1])
                self.pending.pop(0)
        except Exception as e:  # noqa: BLE001
            if self.down_since is None:
                self.down_since = now
                print(
                    f"warning: MLflow unreachable ({first_line(e, 200)}); training goes on, metrics are kept "
                    "and sent when it answers",
                    file=sys.stderr,
                )
            elif now - self.down_since > self.outage_limit_s:
                warn_tracking(
                    f"logging (unreachable for {now - self.down_since:.0f} s, {len(self.pending)} reports dropped)", e
                )
                self.mlflow, self.pending = None, []
            return
        if self.down_since is not None:
            print(f"MLflow reachable again after {now - self.down_since:.0f} s: buffered metrics sent", file=sys.stderr)
            self.down_since = None

    def on_train_start(self, info):
        if self.mlflow is None:
            return
        self._call(
            "log_params",
            {
                "params_G": info["params_G"],
                "params_D": info["params_D"],
                "train_size": info["train_size"],
                "receptive_fields_D": info["receptive_fields_D"],
                "val_size": info["val_size"],
            },
        )
        self._call("set_tags", {"device": info["device"], "precision": info["amp_dtype"]})

    # Synchronous on purpose: one log_batch per report (every train.log_every steps) measured
    # -0.6% against no tracking over 450 default steps, while MLflow's asynchronous logging
    # (synchronous=False: a background thread) measured +12.8% on 2 cores
    # (benchmarks/tracking_overhead.py). System metrics: MLflow's 10 s sampling interval.
    def on_step(self, step, logs):
        self._log(logs, step)

    def on_epoch_end(self, epoch, step, metrics):
        self._log({**metrics, "epoch": epoch}, step)

    def on_train_end(self, summary):
        self._flush(force=True)  # a last try for what an outage held back
        if self.pending:
            print(
                f"warning: MLflow still unreachable at the end of training: {len(self.pending)} metric "
                "reports not logged",
                file=sys.stderr,
            )

    def on_samples(self, step, grid):
        if self.mlflow is not None and self.down_since is None:
            image = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            try:
                self.mlflow.log_image(image, key="samples", step=step, synchronous=True)
            except Exception as e:  # noqa: BLE001 - a picture is not worth stopping for
                print(
                    f"warning: MLflow sample image at step {step} not logged ({str(e).strip()[:200]})", file=sys.stderr
                )
