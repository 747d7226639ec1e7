"""The exceptions that mean "the user's input is wrong": reported as one line, no traceback."""

from .checkpoint import CheckpointError
from .config import ConfigError
from .data import ImageError
from .export import ExportError
from .train import TrainingDiverged

USER_ERRORS = (ConfigError, ImageError, CheckpointError, ExportError, TrainingDiverged)
