"""A batch translation job's records, kept in its output folder: each shard's part file
(`.translate/part-*.csv`, one flushed line per image), the merged `results.csv`, and the drift
report of what was translated (`drift.json`, `drift.png`). pix2pix.translate does the work.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import drift
from .files import atomic_write

if TYPE_CHECKING:
    from .translate import TranslateJob

STATE_DIR = ".translate"  # inside the output folder: part files and the lock
RESULTS = "results.csv"
DRIFT = "drift.json"
FIELDS = ["input", "input_sha256", "output", "output_bytes", "model", "status", "reason", "seconds", "width", "height"]
STAT_FIELDS = list(drift.INTENSITY + drift.COLOUR + drift.TEXTURE)


def state_dir(job: TranslateJob) -> Path:
    return Path(job.output) / STATE_DIR


def read_rows(path: Path) -> Iterator[dict]:
    """Rows of a results or part file; a last line cut short by a kill is ignored."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    yield from csv.DictReader(io.StringIO(text))


def recorded(job: TranslateJob) -> dict[str, dict]:
    """{input: row} of everything already recorded (results.csv, then every part file; a later
    successful row wins over an earlier one)."""
    rows: dict[str, dict] = {}
    sources = [Path(job.output) / RESULTS] + sorted(state_dir(job).glob("part-*.csv"))
    for path in sources:
        for row in read_rows(path):
            if row.get("status") == "ok" or row.get("input") not in rows:
                rows[row["input"]] = row
    return rows


def is_done(row: dict | None, digest: str, model_id: str, output: Path) -> bool:
    return (
        bool(row)
        and row["status"] == "ok"
        and row["input_sha256"] == digest
        and row["model"] == model_id
        and (output.is_file())
    )


class PartWriter:
    """Appends rows to this shard's own part file, one flushed line at a time (in the kernel's
    hands, so a killed process loses none; fsynced when the shard ends)."""

    def __init__(self, job: TranslateJob, index: int, count: int):
        state_dir(job).mkdir(parents=True, exist_ok=True)
        self.path = state_dir(job) / f"part-{index:04d}-of-{count:04d}-{uuid.uuid4().hex[:8]}.csv"
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=FIELDS + STAT_FIELDS, extrasaction="ignore")
        self.writer.writeheader()
        self.file.flush()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def remove_temporaries(out: Path) -> int:
    """Delete what a killed job left half-written (atomic writes' `.NAME.*.tmp` files): only
    when no shard is writing, as `finish` runs."""
    stale = [p for p in out.rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _reference_path(job: TranslateJob) -> Path | None:
    return Path(job.reference) if job.reference else drift.reference_beside(job.model)


def drift_of(job: TranslateJob, ok_rows: list[dict]) -> dict[str, Any]:
    path = _reference_path(job)
    if path is None:
        return {
            "drift": False,
            "tested": False,
            "count": len(ok_rows),
            "reason": f"no {drift.REFERENCE_NAME} beside {job.model}: nothing to compare with (pass --reference)",
        }
    reference = drift.load_reference(path)
    stats = [{k: float(r[k]) for k in reference["statistics"] if r.get(k) not in (None, "")} for r in ok_rows]
    return {**drift.drift_report(reference, stats), "reference": str(path), "model": job.model_id}


def plot_drift(job: TranslateJob, ok_rows: list[dict]) -> Path | None:
    """drift.png beside the results, when there is a reference and matplotlib is installed."""
    path = _reference_path(job)
    if path is None or not ok_rows:
        return None
    return plot_distributions(drift.load_reference(path), ok_rows, Path(job.output) / "drift.png")


def plot_distributions(reference: dict, rows: list[dict], path: Path | str) -> Path | None:
    """A PNG of each tested statistic's distribution, training inputs against `rows`; None
    where matplotlib is not installed (its Agg canvas directly: pyplot would double the import)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    names = reference["statistics"]
    columns = (len(names) + 1) // 2
    fig = Figure(figsize=(3 * columns, 5.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, columns)
    for ax, name in zip(axes.flat, names, strict=False):
        current = [float(r[name]) for r in rows if r.get(name) not in (None, "")]
        ax.hist(reference["values"][name], bins=30, alpha=0.6, density=True, label="training inputs")
        ax.hist(current, bins=30, alpha=0.6, density=True, label="this batch")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))


def count_recorded(job: TranslateJob) -> tuple[int, int]:
    """(done, failed) rows in this run's part files: what a progress line reports."""
    done = failed = 0
    for part in state_dir(job).glob("part-*.csv"):
        for row in read_rows(part):
            done += 1
            failed += row["status"] == "failed"
    return done, failed
