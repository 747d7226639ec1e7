"""python -m pipeline.ops.stack: the team stack's commands (control.py)."""

import sys

from .control import main

sys.exit(main())
