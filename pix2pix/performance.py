"""Process and backend settings that make training faster without changing what it computes.

Each is a `train.*` switch (see :class:`pix2pix.config.TrainConfig`); the benchmarks in
`benchmarks/` measure them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
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


def _cpu_has(probe: str, flags: set[str]) -> bool:
    """A torch CPU capability probe (torch.cpu._is_*_supported), else the kernel's CPU flags."""
    check = getattr(torch.cpu, probe, None)
    if check is not None:
        try:
            return bool(check())
        except RuntimeError:
            pass
    try:
        return bool(set(open("/proc/cpuinfo").read().split()) & flags)
    except OSError:
        return False


# oneDNN's ISA levels as its dnnl_cpu_isa_t bit masks: a level includes every level whose bits
# it contains. ONEDNN_MAX_CPU_ISA caps what oneDNN dispatches to, whatever the CPU has.
_ONEDNN_ISA = {
    "SSE41": 0x1,
    "AVX": 0x3,
    "AVX2": 0x7,
    "AVX2_VNNI": 0xF,
    "AVX2_VNNI_2": 0x1F,
    "AVX512_CORE": 0x27,
    "AVX512_CORE_VNNI": 0x67,
    "AVX512_CORE_BF16": 0xE7,
    "AVX10_1_512": 0x1EF,
    "AVX512_CORE_FP16": 0x1EF,
    "AVX10_1_512_AMX": 0xFEF,
    "AVX512_CORE_AMX": 0xFEF,
    "AVX10_1_512_AMX_FP16": 0x1FEF,
    "AVX512_CORE_AMX_FP16": 0x1FEF,
}


def _onednn_allows(level: str) -> bool:
    """False where ONEDNN_MAX_CPU_ISA (DNNL_MAX_CPU_ISA before oneDNN 2) caps oneDNN below
    `level`: the CPU may have the instructions, but the convolutions will not use them."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if cap not in _ONEDNN_ISA:  # unset, DEFAULT, ALL: no cap
        return True
    need = _ONEDNN_ISA[level]
    return _ONEDNN_ISA[cap] & need == need


def amx_tiles() -> bool:
    """Intel AMX (Sapphire Rapids and later): oneDNN's fastest bf16 convolutions, in NHWC."""
    return _onednn_allows("AVX512_CORE_AMX") and _cpu_has("_is_amx_tile_supported", {"amx_tile", "amx_bf16"})


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: AMX tiles or AVX512-BF16 (oneDNN's bf16
    kernels). Elsewhere bf16 is emulated through fp32 and slower than plain fp32."""
    return amx_tiles() or (
        _onednn_allows("AVX512_CORE_BF16") and _cpu_has("_is_avx512_bf16_supported", {"avx512_bf16"})
    )


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for `train.amp` (None = float32).

    auto: CUDA in bf16 (fp16 + GradScaler on GPUs without bf16); CPU in bf16 where it is
    native (AMX / AVX512-BF16), fp32 elsewhere. true: bf16 on every CPU too. false: fp32."""
    if setting == "false" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if setting == "true" or native_bf16() else None


def use_channels_last(setting: str, device: torch.device, amp_dtype: torch.dtype | None = None) -> bool:
    """auto: NHWC on CUDA (it feeds tensor cores without layout transposes) and for bf16 on
    CPUs with AMX; NCHW elsewhere. Measured (benchmarks/README.md), 256x256 batch 1: on AVX2
    fp32, NHWC ~20% slower; on AVX512-BF16 without AMX (AMD EPYC), bf16 0.499 s/step in NCHW
    vs 0.541 in NHWC; on AMX (Xeon, the issue's prototype) bf16 0.408 NCHW vs 0.387 NHWC."""
    if setting == "auto":
        return device.type == "cuda" or (device.type == "cpu" and amp_dtype == torch.bfloat16 and amx_tiles())
    return setting == "true"


def configure_backends(device: torch.device, cudnn_benchmark: bool) -> None:
    if device.type == "cuda":
        # Fixed crop sizes: let cuDNN time its algorithms once and keep the fastest.
        torch.backends.cudnn.benchmark = cudnn_benchmark
