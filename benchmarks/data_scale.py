"""Data at scale: download + split wall time, bytes on disk, peak memory, uncached training.

    python benchmarks/data_scale.py [--pairs 20000] [--steps 500] [--source DIR] [--code DIR]

Makes N synthetic A|B JPEG pairs (512x256, like edges2shoes: train/ and a 1% val/), or takes
`--source` (e.g. ../shared/datasets/facades), and in a fresh project (git + dvc, this
checkout's code, or `--code`'s: another checkout, to measure a "before") runs as a user does:
`dvc repro download`, then `dvc repro split`. Reports per stage the wall time (DVC's hashing
and caching included) and the peak RSS of the process tree; the split module's own rate
(pairs/s, run once more outside DVC); bytes on disk of the workspace's data/ plus .dvc/cache
(hard links counted once, as `du` does) over the source's bytes. Then trains at 256², batch 1
(the default U-Net-256 and PatchGAN) on the manifest's train pairs, two ways taking turns in
one process: `uncached` (as `num_workers: auto` runs data larger than memory: DataLoader
workers decode and resize every item) and `cached` (every item already decoded in memory,
no workers), and reports images/s over `--steps` steps of each; the peak RSS of the uncached
training alone is measured before, in its own process (30 steps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, machine  # noqa: E402

PROJECT_FILES = ("pix2pix", "pipeline", "dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml", ".dvc/config")


def _make_pair(job: tuple[Path, int]) -> int:
    """One 512x256 A|B JPEG: a smooth 'photo' on the left, its 'edges' (white, dark lines) right."""
    import numpy as np
    from PIL import Image, ImageDraw

    path, seed = job
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:256, 0:256] / 256.0
    base = rng.random(3) * 255
    photo = np.clip(
        base[None, None, :] * (0.6 + 0.4 * (x * rng.random() + y * rng.random()))[..., None]
        + rng.normal(0, 6, (256, 256, 3)),
        0,
        255,
    ).astype(np.uint8)
    edges = Image.new("RGB", (256, 256), (255, 255, 255))
    draw = ImageDraw.Draw(edges)
    for _ in range(int(rng.integers(3, 9))):
        box = sorted(rng.integers(10, 246, 2)), sorted(rng.integers(10, 246, 2))
        draw.ellipse((box[0][0], box[1][0], box[0][1], box[1][1]), outline=(0, 0, 0), width=2)
    both = Image.new("RGB", (512, 256))
    both.paste(Image.fromarray(photo), (0, 0))
    both.paste(edges, (256, 0))
    both.save(path, quality=90)
    return path.stat().st_size


def make_source(folder: Path, pairs: int) -> None:
    n_val = max(10, pairs // 100)
    jobs = []
    for split, count, start in (("train", pairs - n_val, 0), ("val", n_val, pairs - n_val)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        jobs += [(folder / split / f"{i}_AB.jpg", i) for i in range(start, start + count)]
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(_make_pair, jobs, chunksize=64))


def disk_bytes(*paths: Path) -> int:
    """Allocated bytes of all paths together, each inode once (hard links share their bytes)."""
    out = subprocess.run(
        ["du", "-s", "-c", "--block-size=1", *map(str, paths)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1].split()[0])


def measured(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in bytes of the largest process in its tree, output) of `cmd`."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode); "
        "sys.stderr.write(r.stdout + r.stderr)"
    )
    r = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    seconds, rss_kib, code = r.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return float(seconds), int(rss_kib) * 1024, r.stderr


def make_project(folder: Path, code: Path, source: Path) -> dict:
    import yaml

    for name in PROJECT_FILES:
        src = code / name
        if src.is_dir():
            shutil.copytree(src, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, folder / name)
    params = yaml.safe_load((code / "params.yaml").read_text())
    params["data"]["source"] = str(source)
    params["data"].update(load_size=286, crop_size=256, direction="AtoB")
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(folder)}
    config = (folder / ".dvc/config").read_text() if (folder / ".dvc/config").is_file() else None
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q", "-f"]):
        subprocess.run(cmd, cwd=folder, env=env, check=True, capture_output=True)
    if config is not None:  # dvc init writes its own; the project's (link type) wins
        (folder / ".dvc/config").write_text(config)
    return env


def prepare(project: Path, env: dict, source: Path) -> dict:
    src_bytes = disk_bytes(source)
    row: dict = {"source_bytes": src_bytes}
    for stage in ("download", "split"):
        seconds, rss, out = measured([sys.executable, "-m", "dvc", "repro", "--single-item", stage], project, env)
        row[f"{stage}_s"], row[f"{stage}_rss_mb"] = round(seconds, 1), round(rss / 2**20)
    row["disk_bytes"] = disk_bytes(project / "data", project / ".dvc/cache")
    row["disk_over_source"] = round(row["disk_bytes"] / src_bytes, 3)
    # the split module alone, outside DVC (what the stage itself costs); same output again
    seconds, _, _ = measured([sys.executable, "-m", "pipeline.stages.split"], project, env)
    pairs = sum(1 for _ in open(project / "data/pairs/manifest.csv")) - 1
    row.update(split_module_s=round(seconds, 2), pairs=pairs, split_pairs_per_s=round(pairs / seconds))
    return row


class _Clock:
    """Callback: the time of every reported step."""

    def __init__(self):
        self.times: list[float] = []

    def __getattr__(self, name):  # every other hook is a no-op
        return lambda *a, **k: None

    def on_step(self, step, logs):
        self.times.append(time.perf_counter())


def train_rates(project: Path, steps: int, chunk: int = 25) -> dict:
    """images/s at 256² batch 1: uncached (workers decode every item) vs cached, taking turns."""
    import resource

    sys.path.insert(0, str(project))
    import torch

    from pipeline.data.manifest import read_manifest, split_pairs
    from pix2pix import data as data_module
    from pix2pix.config import Config, DataConfig, TrainConfig
    from pix2pix.data import PairedDataset
    from pix2pix.train import Trainer

    pairs = split_pairs(read_manifest(project / "data/pairs/manifest.csv"), "train", project / "data/raw")
    data_cfg = DataConfig(direction="AtoB", load_size=286, crop_size=256)
    uncached_cfg = Config(
        data=data_cfg,
        train=TrainConfig(batch_size=1, log_every=1, sample_every=10**9, device="cpu", num_workers="auto"),
    )
    runs = {}
    uncached = PairedDataset(pairs, uncached_cfg.data)
    fits = uncached.fits_in_cache()
    runs["uncached"] = Trainer(uncached_cfg, uncached, project / "bench-ckpt-uncached", progress=False)
    if runs["uncached"].num_workers == 0:  # small data: auto keeps it in memory; force the uncached path
        uncached_cfg.train.num_workers = max(1, len(os.sched_getaffinity(0)) // 2)
        runs["uncached"] = Trainer(
            uncached_cfg, PairedDataset(pairs, uncached_cfg.data), project / "bench-ckpt-uncached", progress=False
        )
    cached_cfg = Config(
        data=DataConfig(direction="AtoB", load_size=286, crop_size=256),
        train=TrainConfig(batch_size=1, log_every=1, sample_every=10**9, device="cpu", num_workers=0),
    )
    cached = PairedDataset(pairs, cached_cfg.data)
    runs["cached"] = Trainer(cached_cfg, cached, project / "bench-ckpt-cached", progress=False)
    data_module.CACHE_LIMIT_BYTES = 2**63  # the cached run: what the first steps draw, decoded beforehand
    order = list(runs["cached"].sampler)[: steps + 1]
    for index, _ in order:
        cached.decoded(index)
    clocks = {name: _Clock() for name in runs}
    for name, trainer in runs.items():
        trainer.callbacks.callbacks.append(clocks[name])
    per_step = {name: [] for name in runs}
    done = 0
    while done < steps:
        done = min(steps, done + chunk)
        for name, trainer in runs.items():
            clock = clocks[name]
            clock.times.clear()
            trainer.fit(max_steps=done)
            per_step[name] += [
                b - a for a, b in zip(clock.times[1:], clock.times[2:], strict=False)
            ]  # skip each chunk's first step
    rates = {name: round(len(ts) / sum(ts), 3) for name, ts in per_step.items()}
    return {
        "train_steps": steps,
        "fits_in_cache": fits,
        "workers_uncached": runs["uncached"].num_workers,
        "uncached_img_s": rates["uncached"],
        "cached_img_s": rates["cached"],
        "uncached_over_cached": round(rates["uncached"] / rates["cached"], 3),
        "bench_process_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "torch_threads": torch.get_num_threads(),
    }


def training_rss(project: Path, steps: int) -> dict:
    """Peak RSS of the uncached training alone (the train stage's own process and, apart, its
    largest DataLoader worker) over `steps` steps, in a fresh process."""
    code = (
        "import json, resource, sys; sys.path.insert(0, sys.argv[1]);"
        "from pathlib import Path; from pipeline.data.manifest import read_manifest, split_pairs;"
        "from pix2pix.config import Config, DataConfig, TrainConfig; from pix2pix.data import PairedDataset;"
        "from pix2pix.train import Trainer; p = Path(sys.argv[1]);"
        "pairs = split_pairs(read_manifest(p / 'data/pairs/manifest.csv'), 'train', p / 'data/raw');"
        "cfg = Config(data=DataConfig(direction='AtoB', load_size=286, crop_size=256), train=TrainConfig(batch_size=1, "
        "sample_every=10**9, device='cpu'));"
        "t = Trainer(cfg, PairedDataset(pairs, cfg.data), p / 'bench-ckpt-rss', progress=False); "
        "t.fit(max_steps=int(sys.argv[2]));"
        "print(json.dumps({'train_workers': t.num_workers, "
        "'train_main_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),"
        "'train_worker_rss_mb': round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}))"
    )
    r = subprocess.run([sys.executable, "-c", code, str(project), str(steps)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"training alone failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20000, help="synthetic pairs to generate (ignored with --source)")
    ap.add_argument("--source", type=Path, help="an existing dataset folder instead of synthetic pairs")
    ap.add_argument("--steps", type=int, default=500, help="training steps of each variant (0 = skip training)")
    ap.add_argument(
        "--code", type=Path, default=ROOT, help="checkout whose pix2pix/, pipeline/, dvc.yaml run (default: this one)"
    )
    ap.add_argument("--work", type=Path, help="folder for the source and project (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="p2p-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}", flush=True)
    try:
        source = args.source.resolve() if args.source else work / "source"
        if not args.source:
            started = time.perf_counter()
            make_source(source, args.pairs)
            print(
                f"generated {args.pairs} pairs in {time.perf_counter() - started:.0f} s "
                f"({disk_bytes(source) / 2**20:.0f} MiB)",
                flush=True,
            )
        project = work / "project"
        env = make_project(project, args.code.resolve(), source)
        row = {"source": str(args.source or f"synthetic {args.pairs} x 512x256 JPEG"), "code": str(args.code)}
        row |= prepare(project, env, source)
        print(json.dumps(row), flush=True)
        if args.steps:
            row |= training_rss(project, min(args.steps, 30))
            row |= train_rates(project, args.steps)
        print(json.dumps(row, indent=2))
    finally:
        if not args.work:
            subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)  # DVC leaves its links read-only
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
