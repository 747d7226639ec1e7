"""The exceptions that mean "the user's input is wrong": reported as one line, no traceback.

Torch-free on purpose: the CLI and the pipeline catch `Pix2PixError` without importing the
modules that raise it. Each subclass keeps the built-in base it had (ValueError or
RuntimeError), so code that caught those still works. The pipeline's own errors (stages,
the team stack, the flows) derive from these too: one tree, one way to report it.
"""


class Pix2PixError(Exception):
    """Base of every user-facing error; the message names the file or key and the fix."""


class ConfigError(Pix2PixError, ValueError):
    """A configuration value is invalid."""


class DeviceUnavailable(ConfigError):
    """`train.device` names a device this machine does not have."""


class ImageError(Pix2PixError, ValueError):
    """A file or folder cannot be used as pix2pix data."""


class CheckpointError(Pix2PixError, RuntimeError):
    """A checkpoint cannot be written or read."""


class ExportError(Pix2PixError, RuntimeError):
    """An export cannot be written, or does not match PyTorch."""


class TrainingDiverged(Pix2PixError, RuntimeError):
    """A loss became NaN or infinite."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none): what a
    one-line report quotes of an error raised by a library."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
