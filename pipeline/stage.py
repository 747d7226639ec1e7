"""How a stage runs: its `main()` under `run_stage`, so a user error is one line on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pix2pix.errors import Pix2PixError


class StageError(Pix2PixError, RuntimeError):
    """A stage cannot go on; the message says what is wrong and how to fix it."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); user errors become one line on stderr and exit code 1."""
    try:
        main()
    except Pix2PixError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
