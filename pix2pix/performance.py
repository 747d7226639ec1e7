"""Process and backend settings that make training faster without changing what it computes.

Each is a `train.*` switch (see :class:`pix2pix.config.TrainConfig`); the benchmarks in
`benchmarks/` measure them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

# glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_retained = False


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel.

    By default every tensor above 32 MB (the U-Net's inner weight gradients) is a fresh mmap
    and each freed heap top is trimmed, so a CPU training step page-faults in ~400 MB again
    (measured: 110k minor faults and ~0.2 s of kernel time per 256x256 step). With large
    thresholds the step's memory is faulted in once and reused; peak memory is unchanged.
    Process-wide and idempotent; returns False where the C library is not glibc.
    """
    global _retained
    if _retained:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, 1 << 40) and mallopt(_M_TOP_PAD, 256 << 20)
    _retained = bool(ok)
    return _retained


def flush_denormals() -> bool:
    """Treat floats below ~1e-38 as zero. x86 cores take ~100 cycles per denormal operand, and
    GAN training makes them (Adam's squared-gradient averages of tiny gradients). Measured
    ~6% faster per 256x256 CPU step; the change to any result is below float32 resolution."""
    return torch.set_flush_denormal(True)


def use_channels_last(setting: str, device: torch.device) -> bool:
    """auto: on CUDA only. On this project's reference CPU (AVX2, oneDNN) NHWC training is
    ~20% slower than NCHW; on GPUs it feeds tensor cores without layout transposes."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "true"


def configure_backends(device: torch.device, cudnn_benchmark: bool) -> None:
    if device.type == "cuda":
        # Fixed crop sizes: let cuDNN time its algorithms once and keep the fastest.
        torch.backends.cudnn.benchmark = cudnn_benchmark
