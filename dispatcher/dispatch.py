"""The dispatcher: keeps a bounded pool of senders busy with due deliveries.

It claims only as many deliveries as it has free senders, and one subscription gets at most
half of them (max(1, senders // 2)), so a slow endpoint with a backlog cannot take every
sender. It stops claiming as soon as shutdown begins.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading

from dispatcher.claims import (
    ClaimedDelivery,
    claim_due_deliveries,
    record_delivered,
    record_failed_attempt,
)
from dispatcher.transport import AttemptResult, WebhookTransport
from partner_api import clock, signing
from partner_api.config import Config
from partner_api.db import database
from partner_api.envelope import delivery_body

log = logging.getLogger("dispatcher")


class Dispatcher:
    """Claims due deliveries and sends them concurrently; `poll` claims and sends what is due."""

    def __init__(self, config: Config):
        self.config = config
        self.transport = WebhookTransport(
            config.ssrf_policy(),
            timeout=config.delivery_timeout,
            ca_bundle=config.ca_bundle,
            pool_maxsize=config.dispatch_workers,
        )
        self.stopping = threading.Event()
        self._senders = concurrent.futures.ThreadPoolExecutor(
            config.dispatch_workers, thread_name_prefix="sender"
        )
        self._in_flight: dict[concurrent.futures.Future, str] = {}  # → subscription id
        self._lock = threading.Lock()
        self._polling = threading.Lock()  # close() waits for a running poll to return
        self.per_subscription = max(1, config.dispatch_workers // 2)

    def poll(self) -> int:
        """Send everything due now, keeping every sender busy; returns how many were claimed.

        Returns once nothing more can be claimed (or after waiting a poll interval for a busy
        sender); attempts still in flight finish in the background.
        """
        claimed_total = 0
        with self._polling:
            while not self.stopping.is_set():
                free = self.config.dispatch_workers - self._busy()
                if free <= 0:
                    if self._wait_for_a_sender():
                        continue
                    break
                in_flight = self._in_flight_by_subscription()
                with database.connection_context():
                    batch = claim_due_deliveries(
                        min(free, self.config.dispatch_batch_size),
                        self.config.lease_seconds,
                        in_flight=in_flight,
                        share=self.per_subscription,
                    )
                for claim in batch:
                    self._submit(claim)
                claimed_total += len(batch)
                if batch:
                    continue
                # Only subscriptions at their share may have more due: go on when one of
                # the running attempts ends.
                at_share = any(n >= self.per_subscription for n in in_flight.values())
                if at_share and self._wait_for_a_sender():
                    continue
                break
        return claimed_total

    def run_until_idle(self) -> int:
        """`--once`: poll, wait for in-flight attempts, repeat until nothing is due."""
        total = 0
        while not self.stopping.is_set():
            claimed = self.poll()
            self.wait_in_flight()
            total += claimed
            if not claimed:
                break
        return total

    def wait_in_flight(self) -> None:
        with self._lock:
            pending = list(self._in_flight)
        concurrent.futures.wait(pending)

    def stop(self) -> None:
        """Stop claiming; attempts in flight finish (each bounded by the delivery deadline)."""
        self.stopping.set()

    def close(self) -> None:
        self.stop()
        with self._polling:  # a poll in progress returns at its next step
            self._senders.shutdown(wait=True)
        self.transport.close()

    def _busy(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def _in_flight_by_subscription(self) -> collections.Counter:
        with self._lock:
            return collections.Counter(self._in_flight.values())

    def _wait_for_a_sender(self) -> bool:
        """Wait up to a poll interval for an attempt to end; True if one did."""
        with self._lock:
            pending = list(self._in_flight)
        done, _ = concurrent.futures.wait(
            pending,
            timeout=self.config.poll_interval,
            return_when=concurrent.futures.FIRST_COMPLETED,
        )
        return bool(done)

    def _submit(self, claim: ClaimedDelivery) -> None:
        future = self._senders.submit(self.attempt, claim)
        with self._lock:
            self._in_flight[future] = claim.subscription_id
        future.add_done_callback(self._forget)

    def _forget(self, future) -> None:
        with self._lock:
            self._in_flight.pop(future, None)

    def attempt(self, claim: ClaimedDelivery) -> AttemptResult | None:
        """One signed attempt and its recorded outcome. Never raises: a failure to record is
        logged, and the lease makes the delivery due again."""
        try:
            body = delivery_body(claim.event, claim.subscription_id)
            headers = signing.attempt_headers(claim.secret, claim.event.id, clock.unix(), body)
            result = self.transport.send(claim.url, body, headers)
            with database.connection_context():
                if result.ok:
                    next_step = "delivered" if record_delivered(claim) else "lease_lost"
                else:
                    failure = record_failed_attempt(claim, result, self.config)
                    next_step = _next_step(failure)
            log.info(
                "delivery=%s attempt=%d outcome=%s status=%s duration_ms=%d next=%s",
                claim.id,
                claim.attempt,
                "ok" if result.ok else result.error_kind,
                result.status_code if result.status_code is not None else "-",
                result.duration_ms,
                next_step,
            )
            return result
        except Exception:
            log.exception("delivery=%s attempt=%d outcome=error", claim.id, claim.attempt)
            return None


def _next_step(failure) -> str:
    if failure is None:
        return "lease_lost"
    if failure.dead_lettered:
        return "dead_lettered"
    return f"retry_at:{clock.isoformat(failure.next_attempt_at)}"
