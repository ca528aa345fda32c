"""The recorder: one thread that writes attempt outcomes in batches through the lifecycle
(`lifecycle.record_outcomes`) and logs one line per attempt.

A batch the database refuses is tried again a few times; after that it is left to the leases,
which make its deliveries due again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

import peewee

from dispatcher import metrics
from dispatcher.transport import AttemptResult
from partner_api.config import Config
from partner_api.db import database, error_line, kept_connection
from partner_api.delivery import lifecycle
from partner_api.delivery.claims import ClaimedDelivery

log = logging.getLogger("dispatcher")
RECORD_BATCH = 200  # most outcomes written in one transaction
RECORD_TRIES = 5  # a batch the database refuses this often is left to the leases


class OutcomeRecorder:
    """One thread that writes attempt outcomes in batches and logs one line per attempt."""

    def __init__(self, config: Config, retry_scheduled: Callable[[], None] | None = None):
        self.config = config
        self.retry_scheduled = retry_scheduled  # told after a batch that scheduled a retry
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def put(self, claim: ClaimedDelivery, result: AttemptResult) -> None:
        self._queue.put((claim, result))

    def flush(self) -> None:
        """Wait until every outcome handed over so far is written (or given up on)."""
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0] is None:
                self._queue.task_done()
                break
            while len(batch) < RECORD_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # after this batch
                    self._queue.task_done()
                    break
                batch.append(item)
            try:
                self._record(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
        with contextlib.suppress(Exception):
            database.close()

    def _record(self, batch) -> None:
        for attempt in range(1, RECORD_TRIES + 1):
            try:
                with kept_connection():
                    steps = lifecycle.record_outcomes(batch, self.config)
                break
            except (peewee.DatabaseError, peewee.InterfaceError) as exc:
                if attempt == RECORD_TRIES:
                    log.error(
                        "could not record %d outcomes (%s); their leases make them due again",
                        len(batch),
                        error_line(exc),
                    )
                    return
                time.sleep(min(0.1 * 2**attempt, 2.0))
            except Exception:
                # Never let the thread die: flush() and close() wait on it.
                log.exception(
                    "could not record %d outcomes; their leases make them due again", len(batch)
                )
                return
        if self.retry_scheduled and any(step.startswith("retry_at:") for step in steps):
            try:
                with kept_connection():
                    self.retry_scheduled()
            except (peewee.DatabaseError, peewee.InterfaceError):
                pass  # the next poll finds the retry all the same
        for (claim, result), step in zip(batch, steps, strict=True):
            if step == "dead_lettered":
                metrics.DEAD_LETTERED.inc()
            # The fields are JSON keys in PARTNER_API_LOG_FORMAT=json, key=value in text.
            log.info(
                "attempt",
                extra={
                    "delivery": claim.id,
                    "subscription": claim.subscription_id,
                    "attempt": claim.attempt,
                    "outcome": "ok" if result.ok else result.error_kind,
                    "status": result.status_code,
                    "duration_ms": result.duration_ms,
                    "next": step,
                },
            )
