"""Prefect states for user errors: a Pix2PixError ends a task or flow run FAILED with its one
line, no traceback in the run's logs."""

from __future__ import annotations

import functools

from prefect.states import Failed

from pix2pix.errors import Pix2PixError


def one_line_errors(fn):
    """A user error (Pix2PixError) ends the task or flow run FAILED with its one-line message
    as the state's message and no traceback in the logs; the caller still gets the exception
    (`state.result()` raises it), and a task's retries still apply."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Pix2PixError as e:
            return Failed(message=str(e), data=e)

    return wrapper


def result_of(task_call, *args, **kwargs):
    """Run a task and return its result; a failed task raises its error here, in the flow."""
    return task_call(*args, return_state=True, **kwargs).result()
