"""Quality at an equal number of iterations: our trainer vs the textbook step, on real facades.

    python benchmarks/train_quality.py [--size 128] [--iterations 2000] [--variant both]

Trains each variant (see train_speed.py) from the same seed for the same number of batch-1
iterations, labels -> photo, at a constant learning rate, then scores the generator (eval
mode) on the held-out facades test split with the library's metrics (L1, PSNR, SSIM).
Needs ../shared/datasets/facades. `--variant ours` / `textbook` runs one, so two processes
can share the machine (`--threads 1` each).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def score(g, size: int) -> dict:
    from benchmarks.common import FACADES
    from benchmarks.train_speed import _config
    from pix2pix.data import PairedDataset, iter_batches
    from pix2pix.metrics import evaluate

    test = PairedDataset(FACADES / "test", _config(size, 1).data, train=False)
    g.eval()
    means, _ = evaluate(g, iter_batches(test), "cpu")
    return {k: round(v, 5) for k, v in means.items()} | {"test_images": len(test)}


def run(variant: str, size: int, iterations: int) -> dict:
    import torch

    from benchmarks.common import FACADES
    from benchmarks.train_speed import OURS, OursRunner, TextbookRunner

    torch.manual_seed(0)
    if variant == "textbook":
        runner = TextbookRunner(FACADES / "train", size, 1)
        g, precision = runner.G, "float32"
    else:
        runner = OursRunner(FACADES / "train", size, 1, **OURS[variant])
        g, model = runner.trainer.model.G, runner.trainer.model
        precision = str(model.amp_dtype or "float32").replace("torch.", "") + (" NHWC" if model.channels_last else "")
    start = time.perf_counter()
    for _ in range(iterations):
        runner.step()
    seconds = time.perf_counter() - start
    # scored in float32 whatever the training precision, so only the training differs
    return {
        "variant": variant,
        "precision": precision,
        "size": size,
        "iterations": iterations,
        "train_seconds": round(seconds, 1),
        **score(g, size),
    }


def main(argv=None) -> None:
    import torch

    from benchmarks.common import FACADES, machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument(
        "--variant",
        choices=["both", "textbook", "ours", "ours-fp32", "ours-bf16-nchw", "ours-bf16-nhwc"],
        default="both",
        help="both = textbook and ours; ours = the defaults (bf16 where the CPU has it natively)",
    )
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if not (FACADES / "test").is_dir():
        sys.exit(f"error: {FACADES} not found; this benchmark needs the real facades dataset beside the repo")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    for variant in ["textbook", "ours"] if args.variant == "both" else [args.variant]:
        print(json.dumps(run(variant, args.size, args.iterations)), flush=True)


if __name__ == "__main__":
    main()
