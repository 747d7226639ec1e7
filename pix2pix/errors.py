"""The exceptions that mean "the user's input is wrong": reported as one line, no traceback.

Torch-free on purpose: the CLI and the pipeline catch `Pix2PixError` without importing the
modules that raise it. Each subclass keeps the built-in base it had (ValueError or
RuntimeError), so code that caught those still works.
"""


class Pix2PixError(Exception):
    """Base of every user-facing error; the message names the file or key and the fix."""


class ConfigError(Pix2PixError, ValueError):
    """A configuration value is invalid."""


class ImageError(Pix2PixError, ValueError):
    """A file or folder cannot be used as pix2pix data."""


class CheckpointError(Pix2PixError, RuntimeError):
    """A checkpoint cannot be written or read."""


class ExportError(Pix2PixError, RuntimeError):
    """An export cannot be written, or does not match PyTorch."""


class TrainingDiverged(Pix2PixError, RuntimeError):
    """A loss became NaN or infinite."""


USER_ERRORS = (Pix2PixError,)
