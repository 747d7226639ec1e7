"""Inference at 256x256: eager PyTorch vs the TorchScript and ONNX Runtime exports.

    python benchmarks/infer_speed.py [--checkpoint models/checkpoints/last.pt] [--repeats 20]

Without a checkpoint, a randomly initialised U-Net-256 whose BatchNorm statistics were set by
a few training-mode passes (so folding them is not a no-op). All three run in this process,
alternating, after warm-up; each on the CPU threads torch uses. Prints per-image latency
(batch 1), batched throughput, the speed-up of each export over eager, and the max abs
difference of each export's output from eager's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, median, timed  # noqa: E402
from pix2pix.config import Config  # noqa: E402
from pix2pix.export import export_onnx, export_torchscript  # noqa: E402
from pix2pix.loading import OnnxGenerator, load_torchscript  # noqa: E402
from pix2pix.networks import build_generator  # noqa: E402


def generator(checkpoint: str | None, size: int):
    if checkpoint:
        from pix2pix.checkpoint import load_checkpoint
        from pix2pix.loading import generator_from_state

        g, cfg = generator_from_state(load_checkpoint(checkpoint))
        return g.eval(), cfg.to_dict()
    cfg = Config()
    cfg.data.crop_size = size
    torch.manual_seed(0)
    g = build_generator(cfg.model, 3, 3, size)
    g.train()
    with torch.no_grad():
        for _ in range(3):  # move the running statistics away from (0, 1)
            g(torch.rand(2, 3, size, size) * 2 - 1)
    return g.eval(), cfg.to_dict()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8, help="batch size for the throughput row")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)

    g, config = generator(args.checkpoint, args.size)
    tmp = Path(tempfile.mkdtemp(prefix="p2p-infer-"))
    export_torchscript(g, config, tmp / "g.ts")
    export_onnx(g, config, tmp / "g.onnx")
    ts, _, _ = load_torchscript(tmp / "g.ts")
    onnx = OnnxGenerator(tmp / "g.onnx")
    runners = {"eager PyTorch": g, "TorchScript (frozen, BN folded)": ts, "ONNX Runtime (BN folded)": onnx}

    print(f"machine: {machine()}")
    gen = torch.Generator().manual_seed(1)
    for batch in (1, args.batch):
        x = torch.rand(batch, 3, args.size, args.size, generator=gen) * 2 - 1
        times: dict[str, list[float]] = {k: [] for k in runners}
        with torch.inference_mode():
            ref = g(x)
            diffs = {k: float((r(x) - ref).abs().max()) for k, r in runners.items()}
            for r in runners.values():  # warm-up (and TorchScript's profiling runs)
                timed(lambda r=r, x=x: r(x), 3)
            for _ in range(args.repeats):  # alternate, so drift hits all three alike
                for k, r in runners.items():
                    times[k] += timed(lambda r=r, x=x: r(x), 1)
        eager = median(times["eager PyTorch"])
        print(f"\n{args.size}x{args.size}, batch {batch} ({args.repeats} alternating runs each, median):")
        for k, t in times.items():
            m = median(t)
            print(
                f"  {k:34s} {m * 1000 / batch:8.1f} ms/image  {batch / m:6.2f} images/s  x{eager / m:4.2f} vs "
                f"eager  max|diff| {diffs[k]:.1e}"
            )


if __name__ == "__main__":
    main()
