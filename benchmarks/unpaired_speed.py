"""Unpaired (CycleGAN) training speed and peak memory against the reference's own train.py.

    python benchmarks/unpaired_speed.py --reference ~/src/pytorch-CycleGAN-and-pix2pix \\
        [--size 256] [--steps 4 12] [--rounds 2] [--work /tmp/p2p-unpaired-speed]

Both run as their users run them, whole processes, one after the other in alternating rounds:
the reference's `train.py --model cycle_gan --dataset_mode unaligned` (its defaults: ResNet-9
generators, instance norm, LSGAN, pool 50, identity 0.5, batch 1, 4 loader threads; `import
wandb` made optional in the checkout, nothing else changed) for one epoch of N images
(`--max_dataset_size N`), and `pix2pix train --kind unpaired --max-steps N` (the cyclegan
recipe: the same networks and losses) on the same unaligned folders: the facades photos of one
half of the training pairs as trainA, the label maps of the other half as trainB, at
`--size`. The seconds per step are the slope between the two step counts (start-up, imports
and data loading cancel out); peak memory is the process's maximum resident set (wait4's
ru_maxrss, loader workers excluded) at the larger count. Needs ../shared/datasets/facades.
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

from benchmarks.common import FACADES, machine  # noqa: E402


def build_unaligned(facades: Path, out: Path, size: int) -> Path:
    """trainA/ (photos) and trainB/ (labels) from disjoint halves of the facades training pairs."""
    from PIL import Image

    if (out / "trainB").is_dir():
        return out
    pairs = sorted((facades / "train").glob("*.jpg"))
    if not pairs:
        raise SystemExit(f"{facades / 'train'}: no facades pairs here; pass --facades")
    for name in ("trainA", "trainB"):
        (out / name).mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(pairs):
        img = Image.open(path).convert("RGB")
        w, h = img.size
        half = img.crop((0, 0, w // 2, h)) if i % 2 == 0 else img.crop((w // 2, 0, w, h))
        half.resize((size, size), Image.Resampling.BICUBIC).save(
            out / ("trainA" if i % 2 == 0 else "trainB") / f"{i:03d}.png"
        )
    return out


def timed(cmd: list[str], cwd: Path | None, env: dict) -> tuple[float, float]:
    """(wall-clock seconds, peak RSS in MB) of one whole process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr.read()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def reference_cmd(args, data: Path, steps: int, work: Path) -> list[str]:
    return [
        sys.executable, "train.py", "--dataroot", str(data), "--name", f"speed-{steps}", "--model", "cycle_gan",
        "--dataset_mode", "unaligned", "--checkpoints_dir", str(work / "ref-checkpoints"),
        "--load_size", str(round(args.size * 286 / 256)), "--crop_size", str(args.size),
        "--max_dataset_size", str(steps), "--n_epochs", "1", "--n_epochs_decay", "0", "--no_html",
        "--print_freq", "100000", "--display_freq", "100000", "--save_epoch_freq", "100000",
        "--save_latest_freq", "100000000",
    ]  # fmt: skip


def ours_cmd(args, data: Path, steps: int, work: Path) -> list[str]:
    return [
        sys.executable, "-m", "pix2pix.cli", "train", "--kind", "unpaired", "--data", str(data),
        "--out", str(work / f"ours-{steps}"), "--no-resume", "--max-steps", str(steps),
        "--load-size", str(round(args.size * 286 / 256)), "--crop-size", str(args.size), "--direction", "AtoB",
        "--device", "cpu", "--sample-every", "100000", "--log-every", "100000",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of the reference repository")
    parser.add_argument("--facades", type=Path, default=FACADES)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs=2, default=[4, 12])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/p2p-unpaired-speed"))
    args = parser.parse_args()
    data = build_unaligned(args.facades, args.work / f"unaligned-{args.size}", args.size)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    ref_env = {**env, "PYTHONPATH": os.environ.get("REFERENCE_PYTHONPATH", "")}
    our_env = {**env, "PYTHONPATH": str(root)}
    low, high = args.steps
    slopes: dict[str, list[float]] = {"reference": [], "ours": []}
    peaks: dict[str, list[float]] = {"reference": [], "ours": []}
    for r in range(args.rounds):
        for who in ("reference", "ours") if r % 2 == 0 else ("ours", "reference"):
            make, cwd, e = (reference_cmd, args.reference, ref_env) if who == "reference" else (ours_cmd, root, our_env)
            t_low, _ = timed(make(args, data, low, args.work), cwd, e)
            t_high, peak = timed(make(args, data, high, args.work), cwd, e)
            slopes[who].append((t_high - t_low) / (high - low))
            peaks[who].append(peak)
            print(
                json.dumps(
                    {"round": r, "who": who, "s_per_step": round(slopes[who][-1], 3), "peak_rss_mb": round(peak)}
                ),
                flush=True,
            )
    ref, ours = statistics.median(slopes["reference"]), statistics.median(slopes["ours"])
    ratios = [a / b for a, b in zip(slopes["reference"], slopes["ours"], strict=True)]
    print(
        json.dumps(
            {
                "machine": machine(),
                "size": args.size,
                "steps": args.steps,
                "reference_s_per_step": round(ref, 3),
                "ours_s_per_step": round(ours, 3),
                "speedup": round(ref / ours, 2),
                "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)],
                "reference_peak_rss_mb": round(max(peaks["reference"])),
                "ours_peak_rss_mb": round(max(peaks["ours"])),
                "memory_ratio": round(max(peaks["ours"]) / max(peaks["reference"]), 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
