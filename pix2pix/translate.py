"""Batch translation of a folder: shards, atomic outputs, a results manifest, resume, drift.

`translate_folder(job)` translates every image under `job.input` (sub-folders included) into
`job.output`, keeping the relative path (`a/b.jpg` -> `a/b.png`). The work is cut into shards
(every n-th image); each shard runs in its own process (`job.workers`) or, through
`run_shard`, anywhere else that sees the same folders (the pipeline's flow runs one shard per
flow run), and `finish` merges what they wrote.

Guarantees:
- An output is written to a temporary name and renamed into place, then recorded by one
  appended line of its shard's part file (`.translate/part-*.csv`). A job killed at any point
  and run again skips every input whose sha256, model and output (its size) are recorded, and
  translates the rest; an output that was written but not yet recorded is written again with
  the same bytes. Nothing is half-written and no input is listed twice in `results.csv`.
- One image that cannot be read, is over `max_megapixels` or fails is listed with its reason;
  the job goes on. A folder that cannot be written fails before any work.
- `results.csv`: one row per input (path, sha256, output, model, status, reason, seconds, size
  and the drift statistics of `pix2pix.drift`). `drift.json`: the two-sample test of those
  statistics against the reference found beside the model (`input_reference.json`).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import fcntl
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from PIL import Image

from . import drift
from .errors import ImageError, Pix2PixError, first_line
from .files import atomic_write, atomic_write_text
from .images import IMAGE_EXTENSIONS, open_image
from .translate_records import (
    DRIFT,
    FIELDS,
    RESULTS,
    STAT_FIELDS,
    PartWriter,
    count_recorded,
    drift_of,
    is_done,
    plot_drift,
    recorded,
    remove_temporaries,
    state_dir,
)

DEFAULT_MAX_MEGAPIXELS = 150.0


class TranslateError(Pix2PixError, RuntimeError):
    """A batch translation job cannot start (its model, input or output folder)."""


@dataclass
class TranslateJob:
    model: str  # a checkpoint, TorchScript or ONNX file
    input: str  # folder (or one image)
    output: str  # folder
    model_id: str = ""  # what the manifest records as the model (default: file name + sha256)
    workers: int = 0  # processes, one shard each; 0 = one per core (at most 4, and no more than images)
    threads: int = 0  # per worker; 0 = the machine's cores shared out
    tile_megapixels: float = 1.0
    overlap: int = 64
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    device: str = "cpu"
    amp: str = "auto"
    reference: str = ""  # drift reference (default: input_reference.json beside the model)
    extra: dict = field(default_factory=dict)  # recorded in the summary (e.g. the registry version)


@dataclass(frozen=True)
class Item:
    input: str  # relative to the input folder (POSIX)
    output: str  # relative to the output folder


# --- planning --------------------------------------------------------------------------------


def list_inputs(root: Path) -> list[Path]:
    """Every image file under `root` (or `root` itself), sorted, hidden files and folders skipped."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise TranslateError(f"{root}: no such folder; point --input at a folder of images")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath) / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(found)


def plan(job: TranslateJob) -> tuple[list[Item], dict[str, str]]:
    """The items to translate, and {input: reason} for those refused before any work (two
    inputs that would write the same output: the first one wins)."""
    root = Path(job.input)
    paths = list_inputs(root)
    if not paths:
        raise TranslateError(f"{root}: no images found ({', '.join(IMAGE_EXTENSIONS)}); check --input")
    base = root if root.is_dir() else root.parent
    items, refused, owner = [], {}, {}
    for p in paths:
        rel = p.relative_to(base).as_posix()
        out = Path(rel).with_suffix(".png").as_posix()
        if out in owner:
            refused[rel] = f"writes the same output {out} as {owner[out]}; rename one of them"
            continue
        owner[out] = rel
        items.append(Item(rel, out))
    return items, refused


def shard(items: list[Item], index: int, count: int) -> list[Item]:
    return items[index::count]


# --- one image -------------------------------------------------------------------------------


@contextlib.contextmanager
def no_pixel_limit():
    """Pillow's own decompression-bomb limit (about 89 MP) off: the job checks the size from
    the header against its own --max-megapixels first."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def translate_one(runner, job: TranslateJob, src: Path, dest: Path, data: bytes) -> dict:
    """Translate one file's bytes into `dest` (atomically); the row's size and statistics."""
    from .predict import from_array, to_array
    from .tiling import translate_array

    with no_pixel_limit():
        header = open_image(src, decode=False, data=data)
        width, height = header.size
        if width * height > job.max_megapixels * 1e6:
            raise ImageError(
                f"{src}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit of "
                f"{job.max_megapixels:g}; raise --max-megapixels or downscale it"
            )
        img = open_image(src, data=data)
    arr = to_array(img, runner.input_nc)
    del img, header
    stats = drift.image_statistics(arr, runner.config["data"]["crop_size"])
    out = translate_array(runner, arr, job.tile_megapixels, job.overlap)
    del arr
    image = from_array(out)
    # No fsync per image (it cost as much as translating a small one): a kill leaves the file whole
    # or absent all the same, and the manifest records its size, which a rerun checks.
    atomic_write(dest, lambda f: image.save(f, format="PNG"), durable=False)
    return {
        "width": width,
        "height": height,
        "output_bytes": dest.stat().st_size,
        **{k: round(stats[k], 6) for k in STAT_FIELDS if k in stats},
    }


# --- a shard ---------------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_model_id(model: Path) -> str:
    return f"{model.name}@sha256:{file_digest(model)[:16]}"


def _die_with_parent() -> None:
    """A worker process gets SIGKILL when the job's main process dies (Linux), so a killed job
    leaves no orphan writing beside its rerun."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def load_job_runner(job: TranslateJob):
    import torch

    from .loading import load_runner

    onnx = Path(job.model).suffix.lower() == ".onnx"
    # With ONNX Runtime doing the work, torch's own thread pool (it only converts tiles) would
    # spin beside ORT's threads and take their cores: one thread for torch then.
    torch.set_num_threads(1 if onnx else job.threads or torch.get_num_threads())
    return load_runner(job.model, device=job.device, amp=job.amp, threads=job.threads or None)


def run_shard(
    job: TranslateJob, index: int = 0, count: int = 1, progress: Callable[[int, int], None] | None = None
) -> dict[str, int]:
    """Translate shard `index` of `count`: every item not already recorded as done. Returns
    {"translated", "skipped", "failed"}."""
    items, refused = plan(job)
    mine = shard(items, index, count)
    done_rows = recorded(job)
    runner = None
    writer = PartWriter(job, index, count)
    counts = {"translated": 0, "skipped": 0, "failed": 0}
    try:
        for n, item in enumerate(mine, 1):
            src = Path(job.input) / item.input if Path(job.input).is_dir() else Path(job.input)
            dest = Path(job.output) / item.output
            started = time.perf_counter()
            row = {"input": item.input, "output": item.output, "model": job.model_id, "reason": ""}
            try:
                data = src.read_bytes()
                row["input_sha256"] = hashlib.sha256(data).hexdigest()
                if is_done(done_rows.get(item.input), row["input_sha256"], job.model_id, dest):
                    counts["skipped"] += 1
                    continue
                if runner is None:
                    runner = load_job_runner(job)
                row.update(translate_one(runner, job, src, dest, data))
                row["status"] = "ok"
                counts["translated"] += 1
            except (Pix2PixError, OSError, RuntimeError, ValueError, MemoryError) as e:
                row.update(status="failed", reason=first_line(e))
                counts["failed"] += 1
            row["seconds"] = round(time.perf_counter() - started, 4)
            writer.write(row)
            if progress:
                progress(n, len(mine))
        if index == 0:  # refused items are listed once, by the first shard
            for rel, reason in refused.items():
                writer.write({"input": rel, "output": "", "model": job.model_id, "status": "failed", "reason": reason})
                counts["failed"] += 1
    finally:
        writer.close()
    return counts


def _shard_process(job: TranslateJob, index: int, count: int) -> dict[str, int]:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process stops the job
    return run_shard(job, index, count)


# --- the job ---------------------------------------------------------------------------------


def prepare(job: TranslateJob) -> TranslateJob:
    """Check the model, input and output before any work; fill in the model id and threads."""
    model = Path(job.model)
    if not model.is_file():
        raise TranslateError(f"{model}: no such model file; pass a checkpoint (.pt), TorchScript (.ts) or ONNX file")
    if not job.model_id:
        job.model_id = default_model_id(model)
    if job.workers < 0:
        raise TranslateError(f"--workers {job.workers}: must be 0 (one per core) or more")
    items, _ = plan(job)  # an empty or missing input fails here, before a worker starts
    if not job.workers:  # one single-threaded process per core beat one process on all cores (benchmarks)
        job.workers = max(1, min(os.cpu_count() or 1, 4, len(items)))
    if not job.threads:
        job.threads = max(1, (os.cpu_count() or 1) // job.workers)
    out = Path(job.output)
    try:
        state_dir(job).mkdir(parents=True, exist_ok=True)
        atomic_write_text(state_dir(job) / "writable", "ok\n")
    except OSError as e:
        raise TranslateError(
            f"{out}: cannot write the output folder ({first_line(e)}); choose another --output"
        ) from None
    return job


@contextlib.contextmanager
def exclusive(job: TranslateJob):
    """One job at a time per output folder on this machine."""
    with open(state_dir(job) / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TranslateError(
                f"{job.output}: another translate job is writing here; wait for it or choose another --output"
            ) from None
        yield


def finish(job: TranslateJob) -> dict[str, Any]:
    """Merge the shards' part files into `results.csv` (one row per input, sorted), write
    `drift.json` (and `drift.png` where matplotlib is installed), remove what killed runs left
    half-written; returns the counts."""
    remove_temporaries(Path(job.output))
    items, refused = plan(job)
    rows = recorded(job)
    wanted = [i.input for i in items] + list(refused)
    merged = [rows[name] for name in sorted(wanted) if name in rows]

    def write(f):
        writer = csv.DictWriter(f, fieldnames=FIELDS + STAT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(merged)

    atomic_write(Path(job.output) / RESULTS, write, mode="w")
    for part in state_dir(job).glob("part-*.csv"):
        part.unlink()
    ok = [r for r in merged if r["status"] == "ok" and r.get("model") == job.model_id]
    report = drift_of(job, ok)
    atomic_write_text(Path(job.output) / DRIFT, json.dumps(report, indent=2) + "\n")
    plot_drift(job, ok)
    return {
        "total": len(wanted),
        "ok": len(ok),
        "failed": sum(r["status"] == "failed" for r in merged),
        "missing": len(wanted) - len(merged),
        "drift": report["drift"],
        "drift_tested": report["tested"],
    }


def translate_folder(job: TranslateJob, report: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run a whole job on this machine: `job.workers` processes, one shard each; then finish."""
    job = prepare(job)
    report = report or (lambda line: print(line, file=sys.stderr, flush=True))
    items, refused = plan(job)
    started = time.perf_counter()
    totals = {"translated": 0, "skipped": 0, "failed": 0}
    with exclusive(job):
        before = len(recorded(job))
        if job.workers == 1:
            last = [0.0]

            def progress(n, total):
                now = time.perf_counter()
                if now - last[0] >= 2 or n == total:
                    last[0] = now
                    report(f"translate: {n}/{total} ({n / max(now - started, 1e-9):.2f} images/s)")

            totals = run_shard(job, 0, 1, progress)
        else:
            totals = _run_workers(job, started, report, len(items) + len(refused))
        summary = {**totals, **finish(job)}
    seconds = time.perf_counter() - started
    summary.update(
        seconds=round(seconds, 2),
        images_per_s=round(summary["translated"] / seconds, 3) if seconds else 0.0,
        model=job.model_id,
        output=str(job.output),
        previously_recorded=before,
        **job.extra,
    )
    return summary


def _run_workers(job: TranslateJob, started: float, report, total: int) -> dict[str, int]:
    totals = {"translated": 0, "skipped": 0, "failed": 0}
    with ProcessPoolExecutor(job.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_shard_process, job, i, job.workers) for i in range(job.workers)]
        pending = set(futures)
        while pending:
            finished = {f for f in pending if f.done()}
            for f in finished:
                try:
                    counts = f.result()
                except BrokenProcessPool:
                    raise TranslateError(
                        f"{job.output}: a worker process died (out of memory?); run the same command again to "
                        "resume, with fewer --workers or a smaller --tile-megapixels"
                    ) from None
                for k, v in counts.items():
                    totals[k] += v
            pending -= finished
            done, failed = count_recorded(job)
            rate = done / max(time.perf_counter() - started, 1e-9)
            report(f"translate: {done}/{total} recorded, {failed} failed ({rate:.2f} images/s, {job.workers} workers)")
            if pending:
                wait(pending, timeout=2, return_when=FIRST_COMPLETED)
    return totals
