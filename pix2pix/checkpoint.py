"""Atomic, safe-to-load checkpoints.

Files are written to a temporary name in the same folder, flushed to disk and renamed over
the target, so a crash or kill leaves either the old file or the new one, never half of one.
Loading uses ``torch.load(weights_only=True)``: tensors and plain containers only, so a
tampered file cannot run code; it is refused with a one-line error instead.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import CheckpointError


def atomic_write(path: Path | str, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call `write(fileobj)` on a temp file beside `path`, fsync it and rename it into place.

    On any error the temp file is removed and the previous `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
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


def save_checkpoint(state: dict, path: Path | str) -> Path:
    """Serialise first (so a failure cannot touch the disk), then write atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        return atomic_write_bytes(path, buffer.getbuffer())
    except OSError as e:
        raise CheckpointError(f"{path}: could not write checkpoint ({e.strerror or e}); the previous file is intact; free disk space or choose another folder") from None


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train first or check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused to load: not a plain-tensor checkpoint ({first}); only load checkpoints you trust, or retrain") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint ({first}); the file is corrupt or incomplete, delete it and retrain or resume from an older one") from None
    if not isinstance(state, dict) or "generator" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a pix2pix checkpoint (missing generator weights or config)")
    return state
