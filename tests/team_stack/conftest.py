"""The `stack` fixture: one real team stack for every test in this folder (package scope)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    """Up before the folder's first test that asks, down after its last (team_stack/stack.py)."""
    from team_stack.stack import running_stack

    yield from running_stack(tmp_path_factory)
