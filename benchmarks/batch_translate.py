"""Batch translation: throughput against a plain ONNX Runtime loop, tiling seams, and the
memory of a very large image.

    python benchmarks/batch_translate.py --checkpoint CKPT [--images 106] [--rounds 3]
        [--large 8192] [--work /tmp/p2p-batch]

1. Throughput, whole processes side by side, alternating, `--rounds` times: the baseline is
   the best a user gets from one process of ONNX Runtime without our job: a loop that decodes
   each image, runs the session (all cores) and writes the PNG (`--baseline-only`, this same
   file run as its own process). Against it: `pix2pix translate` with 1 worker (all cores)
   and with one worker per core (1 thread each). Inputs: the facades test labels (256x256),
   mirrored and rotated beyond 106; without ../shared, synthetic images of that size. A job has
   a fixed cost (imports of torch, scipy and matplotlib, the drift report and its plot: ~8 s on
   2 cores) that the loop has not, so the ratio depends on the job's size: say it.
2. Seams: a 1024x1024 input (facades labels upscaled 4x), one full pass against 512-px tiles
   (overlap 0, 64, 128, 256): mean and max absolute difference, in 1/255.
3. Memory: one `--large`-pixel-square image through `pix2pix translate` (default tiles):
   the process's peak RSS (ru_maxrss), and its seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import FACADES, ROOT, machine, median  # noqa: E402


def baseline(model: str, src: Path, out: Path) -> None:
    """The plain loop: one ONNX Runtime session, decode, run, save."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.png")):
        x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None] / 127.5 - 1
        y = session.run(None, {"input": x})[0][0]
        arr = np.clip((y.transpose(1, 2, 0) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(out / path.name)


def make_inputs(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if (FACADES / "test").is_dir():  # the 106 test labels, then again mirrored, rotated ...
        files = sorted((FACADES / "test").glob("*.jpg"))
        for i in range(count):
            img = Image.open(files[i % len(files)]).convert("RGB").crop((256, 0, 512, 256))
            turn = i // len(files)
            img = img.transpose(Image.FLIP_LEFT_RIGHT) if turn % 2 else img
            img.rotate(90 * (turn // 2)).save(folder / f"{i:04d}.png")
    else:
        rng = np.random.default_rng(0)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def timed_process(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB of the children so far) of one whole process."""
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a trained checkpoint (its U-Net is exported to ONNX here)")
    ap.add_argument("--images", type=int, default=106)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large", type=int, default=8192, help="side of the large image (0 = skip)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/p2p-batch"))
    ap.add_argument("--baseline-only", nargs=3, metavar=("MODEL", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_only:
        model, src, out = args.baseline_only
        return baseline(model, Path(src), Path(out))

    import os

    from pix2pix.export import export_generator
    from pix2pix.loading import load_runner
    from pix2pix.tiling import translate_array

    print(machine())
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    export = work / "export"
    export_generator(args.checkpoint, export, formats=("onnx",))
    onnx = str(export / "generator.onnx")
    src = make_inputs(work / "inputs", args.images)
    cores = os.cpu_count() or 1
    py = sys.executable
    variants = {
        "onnxruntime loop (1 process)": lambda out: [py, __file__, "--checkpoint", "-", "--baseline-only", onnx,
                                                     str(src), out],
        "translate, 1 worker": lambda out: [py, "-m", "pix2pix.cli", "translate", "--model", onnx, "--input", str(src),
                                            "--output", out],
        f"translate, {cores} workers x 1 thread": lambda out: [py, "-m", "pix2pix.cli", "translate", "--model", onnx,
                                                               "--input", str(src), "--output", out, "--workers",
                                                               str(cores), "--threads", "1"],
    }  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, cmd in variants.items():
            out = work / f"out-{r}-{len(times[name])}-{abs(hash(name))}"
            seconds, _ = timed_process(cmd(str(out)))
            times[name].append(seconds)
            shutil.rmtree(out)
    base = median(times["onnxruntime loop (1 process)"])
    print(f"\nthroughput, {args.images} images of 256x256, whole processes, median of {args.rounds} rounds:")
    for name, ts in times.items():
        rate = args.images / median(ts)
        print(f"  {name:34s} {median(ts):6.2f} s  {rate:6.2f} images/s  {base / median(ts):.2f}x the loop "
              f"(rounds {', '.join(f'{t:.2f}' for t in ts)})")  # fmt: skip

    runner = load_runner(args.checkpoint, amp="false")
    label = next(iter(sorted(src.glob("*.png"))))
    arr = np.asarray(Image.open(label).convert("RGB").resize((1024, 1024), Image.NEAREST))
    full = translate_array(runner, arr, tile_megapixels=1.1).astype(float)
    print("\nseams, 1024x1024, 512-px tiles against one full pass (in 1/255; 'at cuts' = the columns where")
    print("hard tiles meet):")
    cuts = [511, 512]
    for overlap in (0, 64, 128, 256):
        tiled = translate_array(runner, arr, tile_megapixels=0.27, overlap=overlap).astype(float)
        diff = np.abs(tiled - full)
        print(f"  overlap {overlap:3d}{' (hard cuts)' if not overlap else ' blended   '}: mean {diff.mean():.3f}, "
              f"max {diff.max():.0f}, at cuts {diff[:, cuts].mean():.3f}")  # fmt: skip

    if args.large:
        big = work / "large"
        big.mkdir()
        side = args.large
        tile = np.asarray(Image.open(label).convert("RGB"))
        reps = (side // tile.shape[0] + 1, side // tile.shape[1] + 1, 1)
        Image.fromarray(np.tile(tile, reps)[:side, :side]).save(big / "large.png", compress_level=1)
        code = (
            "import resource, sys, json; from pix2pix.cli import main; rc = main(sys.argv[1:]); "
            "print(json.dumps({'rc': rc, 'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
        )
        started = time.perf_counter()
        result = subprocess.run(
            [py, "-c", code, "translate", "--model", args.checkpoint, "--input", str(big), "--output",
             str(work / "large-out"), "--amp", "false"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        )  # fmt: skip
        probe = json.loads(result.stdout.strip().splitlines()[-1])
        seconds = time.perf_counter() - started
        print(f"\nlarge image {side}x{side} ({side * side / 1e6:.0f} MP), checkpoint, default tiles: "
              f"peak RSS {probe['peak_mb']:.0f} MB, {seconds:.0f} s, rc {probe['rc']}")  # fmt: skip


if __name__ == "__main__":
    main()
