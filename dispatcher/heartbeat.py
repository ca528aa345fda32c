"""Each dispatcher stamps its row in `dispatcher_polls` when it polls, and removes it when it
stops cleanly, so `stats` can tell a running dispatcher from a stopped one.
"""

from __future__ import annotations

import os
import socket

from partner_api import clock, ids
from partner_api.delivery import stats


class Heartbeat:
    """One dispatcher's identity and its poll stamps (at most one write per `every` seconds)."""

    def __init__(self, every: float):
        self.dispatcher_id = ids.new_id("dsp")
        self.hostname = socket.gethostname()[:255]
        self.pid = os.getpid()
        self.started_at = clock.now()
        self.every = every
        self._last_stamp: float | None = None

    def stamp(self, force: bool = False) -> None:
        """Record a poll now (in the caller's connection), unless one was recorded recently."""
        recent = self._last_stamp is not None and clock.monotonic() - self._last_stamp < self.every
        if recent and not force:
            return
        stats.stamp_poll(self.dispatcher_id, self.hostname, self.pid, self.started_at)
        self._last_stamp = clock.monotonic()

    def stopped(self) -> None:
        """A clean stop (in the caller's connection): remove this dispatcher's row, if any."""
        if self._last_stamp is not None:
            stats.forget_dispatcher(self.dispatcher_id)
            self._last_stamp = None
