"""What a serving model receives, watched for drift.

`InputMonitor` records `pix2pix.drift.image_statistics` of every image a model is asked to
translate — one JSON line each, appended to a log file when one is given — and reports drift
over the last `window` of them against the model's training reference (the same test as a
batch job's `drift.json`). The registered pyfunc holds one (so `mlflow models serve` and the
page record what they receive); `P2P_INPUT_LOG=FILE` keeps the log across processes and
restarts, and `pix2pix drift --log FILE --reference REF` reports it offline.

A log may hold several models' lines: each line carries the key of the reference it is to be
compared with (a hash of the reference), and a monitor reads back only its own.

Torch-free: NumPy, Pillow and SciPy, like `pix2pix.drift`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import drift
from .errors import ImageError

LOG_ENV = "P2P_INPUT_LOG"  # where served models append what they receive
DEFAULT_WINDOW = 500  # the most recent inputs a report covers


def reference_key(reference: Mapping[str, Any]) -> str:
    """A short stable name for a reference: the lines of a log that belong to it."""
    return hashlib.sha256(json.dumps(reference, sort_keys=True).encode()).hexdigest()[:16]


def read_log(path: Path | str, key: str | None = None) -> Iterator[dict]:
    """The JSON lines of an input log (those of reference `key` when given); a line cut short
    by a killed writer is skipped."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            row = _parse(line, key)
            if row is not None:
                yield row


def tail_of_log(path: Path | str, key: str | None, count: int) -> list[dict]:
    """The last `count` rows of reference `key`, read backwards from the end of the log in
    growing chunks: a report costs the window, not the log's whole history."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        chunk = 256 * count + 4096
        while True:
            start = max(0, end - chunk)
            f.seek(start)
            lines = f.read(end - start).split(b"\n")
            if start > 0:
                lines = lines[1:]  # the first may begin mid-line
            rows = [row for row in (_parse(line, key) for line in lines) if row is not None]
            if len(rows) >= count or start == 0:
                return rows[-count:]
            chunk *= 4


def _parse(line: bytes, key: str | None) -> dict | None:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return row if isinstance(row, dict) and (key is None or row.get("reference") == key) else None


class InputMonitor:
    """Statistics of incoming images against a training reference; thread-safe. With a log, a
    report covers the last `window` lines of the log for this reference, whichever process
    (or model version trained on the same data) wrote them; without, this process's inputs."""

    def __init__(
        self,
        reference: Mapping[str, Any] | None,
        log: Path | str | None = None,
        window: int = DEFAULT_WINDOW,
        alpha: float = drift.DEFAULT_ALPHA,
    ):
        self.reference = dict(reference) if reference is not None else None
        self.key = reference_key(reference) if reference is not None else None
        self.window = window
        self.alpha = alpha
        self.recorded = 0  # by this process
        self.rows: deque[dict] = deque(maxlen=window)
        self.log: Path | None = None
        self._lock = threading.Lock()
        if log:
            self.attach(log)

    def attach(self, log: Path | str) -> None:
        """Append to `log` from now on; reports read it."""
        path = Path(log)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a"):
                pass
        except OSError as e:
            raise ImageError(
                f"{path}: cannot write the input log ({e.strerror}); set {LOG_ENV} to a writable file"
            ) from None
        with self._lock:
            self.log = path

    def record(self, image: np.ndarray, source: str = "") -> dict | None:
        """Record one uint8 H x W x C (or H x W) image; None when there is no reference (its crop
        size and statistics are what the numbers are compared with)."""
        if self.reference is None:
            return None
        arr = image[..., None] if image.ndim == 2 else image
        row = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "reference": self.key,
            **({"source": source} if source else {}),
            **{k: round(v, 6) for k, v in drift.image_statistics(arr, self.reference["crop_size"]).items()},
        }
        with self._lock:
            self.rows.append(row)
            self.recorded += 1
            if self.log is not None:
                self._append(row)
        return row

    def _append(self, row: dict) -> None:
        # One write of one line under an exclusive lock: processes sharing the log (serving
        # workers, the page) never interleave inside a line; a line a killed writer cut short
        # is ended first, so it costs only itself.
        with open(self.log, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            end = f.seek(0, os.SEEK_END)
            cut = end > 0 and f.seek(end - 1) >= 0 and f.read(1) != b"\n"
            f.write((b"\n" if cut else b"") + json.dumps(row).encode() + b"\n")

    def report(self) -> dict[str, Any]:
        """The drift report of the last `window` inputs: {"drift": bool, "tested": bool, ...}."""
        if self.reference is None:
            return {
                "drift": False,
                "tested": False,
                "count": 0,
                "reason": f"this model has no {drift.REFERENCE_NAME}: nothing to compare with (re-export it)",
            }
        with self._lock:
            rows = tail_of_log(self.log, self.key, self.window) if self.log else list(self.rows)
        report = drift.drift_report(self.reference, rows, alpha=self.alpha)
        return {**report, "window": self.window, "log": str(self.log) if self.log else None}


def monitor_for(
    reference_path: Path | str | None, log: Path | str | None = None, window: int = DEFAULT_WINDOW
) -> InputMonitor:
    """A monitor of the reference file (None: a monitor that records nothing), logging to `log`
    or else to $P2P_INPUT_LOG when set."""
    reference = drift.load_reference(reference_path) if reference_path else None
    return InputMonitor(reference, log or os.environ.get(LOG_ENV) or None, window)
