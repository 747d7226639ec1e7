"""Atomic file writes, torch-free: the stages, the presets and the stack write through these
without loading torch.

A file is written to a temporary name in the same folder, flushed to disk and renamed over
the target, so a crash or kill leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path | str, write: Callable[[Any], None], mode: str = "wb", durable: bool = True) -> Path:
    """Call `write(fileobj)` on a temp file beside `path`, fsync it and rename it into place.

    On any error the temp file is removed and the previous `path` is left untouched.
    `durable=False` skips the fsync: still whole-or-nothing when the process is killed (the
    kernel has the data), not after a power cut; for many small outputs that a manifest checks.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")
