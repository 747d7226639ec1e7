"""Atomic, safe-to-load checkpoints.

Files are written atomically (pix2pix/files.py), so a crash or kill leaves either the old
checkpoint or the new one, never half of one.
Loading uses ``torch.load(weights_only=True)``: tensors and plain containers only, so a
tampered file cannot run code; it is refused with a one-line error instead.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from .errors import CheckpointError, first_line
from .files import atomic_write_bytes


def save_checkpoint(state: dict, path: Path | str) -> Path:
    """Serialise first (so a failure cannot touch the disk), then write atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        return atomic_write_bytes(path, buffer.getbuffer())
    except OSError as e:
        raise CheckpointError(
            f"{path}: could not write checkpoint ({e.strerror or e}); the previous file is intact; free disk "
            "space or choose another folder"
        ) from None


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train first or check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: not a plain-tensor checkpoint ({first_line(e)}); only load checkpoints "
            "you trust, or retrain"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({first_line(e)}); the file is corrupt or incomplete, delete it "
            "and retrain or resume from an older one"
        ) from None
    if not isinstance(state, dict) or "generator" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a pix2pix checkpoint (missing generator weights or config)")
    return state
