"""The time budget of a leaderboard: one deadline shared by all entries, checked between images
and between epochs, so an entry that cannot finish is stopped and reported as not finished."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class OutOfBudget(Exception):
    """Raised inside an entry when the leaderboard's deadline has passed."""


@dataclass
class Budget:
    """`minutes` from the moment it is created; `clock` is injectable for tests."""

    minutes: float
    clock: object = field(default=time.monotonic, repr=False)
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def deadline(self) -> float:
        return self.started + self.minutes * 60.0

    def remaining_s(self) -> float:
        return self.deadline - self.clock()

    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def check(self, reserve_s: float = 0.0) -> None:
        """Raise `OutOfBudget` once the deadline (less `reserve_s` kept for later entries) has
        passed."""
        if self.remaining_s() <= reserve_s:
            raise OutOfBudget(f"the {self.minutes:g}-minute budget ran out")

    def epoch_callback(self, reserve_s: float = 0.0):
        """An `on_epoch_end` hook for `visionline.train.fit` that stops training at the deadline."""

        def _hook(epoch: int, metrics: dict[str, float]) -> None:
            self.check(reserve_s)

        return _hook
