"""A time budget (`train.budget_minutes`): the learning-rate schedule laid over wall-clock time
instead of epochs. The rate stays constant for the share `epochs / (epochs + epochs_decay)` of
the budget, then falls linearly to zero at its end, so a run of any length ends fully decayed
(and checkpointed). The time spent is kept in the checkpoint: a resumed run goes on counting the
same budget. Such a run follows the clock, so it does not repeat step for step like an epoch run."""

from __future__ import annotations

import time


class TimeBudget:
    def __init__(self, minutes: float, epochs: int, epochs_decay: int):
        self.seconds = minutes * 60.0
        self.constant_share = epochs / (epochs + epochs_decay)
        self.spent_before = 0.0  # restored from the checkpoint on resume
        self._since: float | None = None

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def start(self) -> None:
        self._since = time.monotonic()

    def elapsed(self) -> float:
        """Seconds of this budget spent so far, resumed runs included."""
        return self.spent_before + (time.monotonic() - self._since if self._since is not None else 0.0)

    def spent(self) -> bool:
        return self.enabled and self.elapsed() >= self.seconds

    def lr_factor(self) -> float:
        """1 during the constant share of the budget, then linear to 0 at its end."""
        done = min(self.elapsed() / self.seconds, 1.0)
        if done <= self.constant_share:
            return 1.0
        return max(0.0, 1.0 - (done - self.constant_share) / (1.0 - self.constant_share))
