"""GPU training throughput: the textbook step against ours (bf16, channels_last, torch.compile,
DDP over every visible GPU), images/s at 256x256, batch 1 and 16.

    python benchmarks/gpu_speed.py [--size 256] [--batches 1 16] [--steps 30] [--warmup 10]
    python benchmarks/gpu_speed.py --smoke      # CPU, tiny sizes: checks the script still runs (CI)

Variants, each in its own process (CUDA state and compile caches stay apart), same data
(real facades when ../shared is beside the repo, else generated pairs):
- textbook: the reference's step (see train_speed.py) on the GPU: fp32, NCHW, plain Adam,
  per-item JPEG decoding in 4 DataLoader workers;
- ours: `Trainer` as `dvc repro` runs it on CUDA (amp auto = bf16, channels_last auto = NHWC,
  cudnn.benchmark, pinned memory, cached decoded images);
- ours+compile: the same with `train.compile: true` (the compile time is reported apart);
- ours DDP xN: `torchrun --nproc_per_node=N` over all visible GPUs (when there are 2 or more),
  images/s summed over the ranks.
A step is timed with CUDA synchronised before and after; the median of `--steps` after
`--warmup` steps is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(
    variant: str, folder: Path, size: int, batch: int, steps: int, warmup: int, device: str, ngf: int | None
) -> dict:
    """Median seconds per step of one variant, in this process."""
    import torch

    from benchmarks.train_speed import OursRunner, TextbookRunner

    started = time.perf_counter()
    if variant == "textbook":
        runner = TextbookRunner(folder, size, batch, device=device, ngf=ngf)
    else:
        runner = OursRunner(folder, size, batch, ngf=ngf, device=device, compile=variant.endswith("compile"))
    for _ in range(warmup):  # the first compiled steps compile
        runner.step()
    _sync()
    setup = time.perf_counter() - started
    times = []
    for _ in range(steps):
        _sync()
        t = time.perf_counter()
        runner.step()
        _sync()
        times.append(time.perf_counter() - t)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    s = statistics.median(times)
    precision = "float32"
    if variant != "textbook":
        model = runner.trainer.model
        precision = str(model.amp_dtype or "float32").replace("torch.", "") + (
            " NHWC" if model.channels_last else " NCHW"
        )
    return {
        "variant": variant if world == 1 else f"ours DDP x{world}",
        "size": size,
        "batch": batch,
        "precision": precision,
        "s_per_step": round(s, 5),
        "images_per_s": round(batch * world / s, 2),
        "setup_s": round(setup, 1),
        "device": str(torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"),
    }


def run_isolated(args_list: list[str], torchrun: int = 0) -> dict:
    cmd = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
        if torchrun
        else [sys.executable]
    )
    out = subprocess.run([*cmd, __file__, *args_list], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(args_list)} failed:\n{out.stderr[-3000:]}")
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def main(argv=None) -> None:
    import torch

    from benchmarks.common import machine, paired_train_folder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--variants", nargs="+", default=["textbook", "ours", "ours+compile"])
    ap.add_argument("--smoke", action="store_true", help="CPU, 32x32, ngf 8, 2 steps, no compile: the script runs (CI)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one variant in this process
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ngf", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if args.smoke:
        args.size, args.batches, args.steps, args.warmup, args.ngf = 32, [1, 2], 2, 1, 8
        args.variants = [
            v for v in args.variants if v != "ours+compile"
        ]  # inductor on CPU needs a compiler and minutes
    folder = paired_train_folder(size=args.size, count=16)
    if args.one:
        result = measure(args.one, folder, args.size, args.batch, args.steps, args.warmup, device, args.ngf)
        if os.environ.get("RANK", "0") == "0":
            print(json.dumps(result))
        return

    print(f"machine: {machine()}", flush=True)
    gpus = torch.cuda.device_count() if device == "cuda" else (2 if args.smoke else 0)
    common = ["--size", str(args.size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    common += ["--smoke"] if args.smoke else []
    rows = []
    for batch in args.batches:
        for variant in args.variants:
            rows.append(run_isolated([*common, "--one", variant, "--batch", str(batch)]))
            print(json.dumps(rows[-1]), flush=True)
        if gpus >= 2:  # one process per GPU (CPU smoke: two gloo processes)
            rows.append(run_isolated([*common, "--one", "ours", "--batch", str(batch)], torchrun=gpus))
            print(json.dumps(rows[-1]), flush=True)
    for batch in args.batches:
        base = next((r for r in rows if r["batch"] == batch and r["variant"] == "textbook"), None)
        print(f"\n{args.size}x{args.size}, batch {batch} per process, {device}:")
        for r in (r for r in rows if r["batch"] == batch):
            ratio = f"  x{r['images_per_s'] / base['images_per_s']:.2f} vs textbook" if base else ""
            print(
                f"  {r['variant']:14s} {r['precision']:14s} {r['s_per_step']:8.4f} s/step "
                f"{r['images_per_s']:9.2f} images/s"
                f"  (set-up {r['setup_s']} s){ratio}"
            )


if __name__ == "__main__":
    main()
