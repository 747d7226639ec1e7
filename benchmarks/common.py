"""Shared helpers for the benchmarks: timing, the machine's matmul peak, FLOP counts, data."""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FACADES = ROOT.parent / "shared" / "datasets" / "facades"


def machine() -> str:
    """The CPU model, its bf16-relevant flags, torch's kernel level and any ISA cap, the GPU."""
    from pix2pix.performance import amx_tiles, native_bf16

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    flags = set(cpuinfo.split())
    has = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
    # A capped ISA (oneDNN, ATen and MKL each have their own switch) stands in for an older CPU: say so.
    caps = ", ".join(
        f"{k}={os.environ[k]}"
        for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
        if os.environ.get(k)
    )
    isa = f"; {has}; torch kernels {torch.backends.cpu.get_cpu_capability()}" + (f", capped by {caps}" if caps else "")
    isa += f"; native bf16 {'yes' if native_bf16() else 'no'}, AMX {'yes' if amx_tiles() else 'no'}"
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}{isa}"


def median(xs) -> float:
    return statistics.median(xs)


def timed(fn, repeats: int) -> list[float]:
    """Seconds per call of `fn` (synchronising CUDA), `repeats` times."""
    out = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, device: str = "cpu") -> float:
    """Best float32 matrix-multiply rate of this machine: the ceiling for conv-heavy work."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    best = min(timed(lambda: a @ b, repeats))
    return 2 * n**3 / best / 1e9


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (convolutions and matmuls, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def paired_train_folder(size: int = 256, count: int = 64) -> Path:
    """The real facades train split when ../shared is beside the repo, else generated A|B pairs."""
    if (FACADES / "train").is_dir():
        return FACADES / "train"
    from pipeline.data.synthetic import generate

    root = Path(tempfile.mkdtemp(prefix="p2p-bench-"))
    generate(root, {"train": count}, size=size, seed=0)
    return root / "train"
