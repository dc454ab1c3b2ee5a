"""Hard time limits for the worker's task threads, watched by one thread per process.

A task past its soft limit is cancelled in its own event loop; one whose thread is stuck
(blocked outside the loop, where cancelling cannot reach) must end the process, as a
killed prefork child would. A timer thread per task did that at the cost of starting and
stopping a thread for every task; here one thread sleeps until the earliest deadline.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable

Expired = Callable[[str, float], None]  # called with the task's name and its limit


class Watchdog:
    def __init__(self, expired: Expired) -> None:
        self._expired = expired
        self._deadlines: dict[int, tuple[float, str, float]] = {}  # token: when, name, limit
        self._changed = threading.Condition()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the watchdog looks again, if nothing wakes it

    def arm(self, name: str, limit: float) -> int:
        """Watch a task that must end within `limit` seconds; `disarm` the token it gets."""
        deadline = time.monotonic() + limit
        token = next(self._tokens)
        with self._changed:
            self._deadlines[token] = (deadline, name, limit)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
                self._thread.start()
            elif deadline < self._wakes_at:  # rare: tasks mostly share one limit
                self._changed.notify()
        return token

    def disarm(self, token: int) -> None:
        """The task ended. The watchdog is not woken: it looks at its next planned time."""
        with self._changed:
            self._deadlines.pop(token, None)

    def _watch(self) -> None:
        while True:
            with self._changed:
                name, limit = self._next_expired()
            self._expired(name, limit)

    def _next_expired(self) -> tuple[str, float]:
        """Wait until the earliest deadline passes; drop it and say whose it was."""
        while True:
            if not self._deadlines:
                self._wakes_at = math.inf
                self._changed.wait()
                continue
            token, (deadline, name, limit) = min(self._deadlines.items(), key=lambda item: item[1])
            left = deadline - time.monotonic()
            if left > 0:
                self._wakes_at = deadline
                self._changed.wait(left)
                continue
            del self._deadlines[token]
            return name, limit
