"""The dispatcher: keeps a bounded pool of senders busy with due deliveries, shared fairly.

A poll claims due deliveries in batches (leased ahead, at most three times what the sharing
rules let run), starts them on free senders by the rules in `delivery/shares.py`, and hands
every outcome to the recorder (`recorder.py`). It stops claiming as soon as shutdown begins.
A wake (`wake`, from `delivery/wake.py`'s listener) makes a running poll claim again at once
and asks for the next poll now; the next poll is also brought forward to the next due time.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

import peewee

from dispatcher import metrics
from dispatcher.heartbeat import Heartbeat
from dispatcher.recorder import OutcomeRecorder
from dispatcher.transport import AttemptResult, WebhookTransport
from partner_api import clock
from partner_api.config import Config
from partner_api.db import database, error_line, kept_connection
from partner_api.delivery import lifecycle, shares, signing, ssrf
from partner_api.delivery.claims import (
    ClaimedDelivery,
    claim_due_deliveries,
    next_due_after,
    still_sendable,
)
from partner_api.delivery.envelope import delivery_body

log = logging.getLogger("dispatcher")
HEADROOM = 3  # a claim leases up to three times what may run, so senders never wait on a claim
# A claim that waited longer than this in the ready queue (held back by the sharing rules) is
# checked before it is sent: its subscription may have been deleted or disabled meanwhile.
STALE_READY_SECONDS = 1.0


class SubscriberHealth:
    """What this dispatcher saw of each subscription: who it is, whether its last attempt
    failed, whether its attempts are slow. Shared by the poll, the senders and the recorder."""

    def __init__(self, slow_after: float):
        self.slow_after = slow_after
        self._known: dict[str, shares.Subscriber] = {}
        self._lock = threading.Lock()

    def claimed(self, claim: ClaimedDelivery) -> None:
        with self._lock:
            seen = self._known.get(claim.subscription_id)
            self._known[claim.subscription_id] = shares.Subscriber(
                claim.subscription_id,
                claim.org_id,
                failing=claim.failing,
                slow=seen.slow if seen is not None else False,
                untried=seen.untried if seen is not None else True,
            )

    def observed(self, claim: ClaimedDelivery, result: AttemptResult) -> None:
        """An attempt ended: a success makes the subscription healthy (or slow, if it took
        long) at once; a failure makes it failing until its next success."""
        slow = result.duration_ms >= self.slow_after * 1000
        with self._lock:
            self._known[claim.subscription_id] = shares.Subscriber(
                claim.subscription_id, claim.org_id, failing=not result.ok, slow=slow
            )

    def snapshot(self, running_since: dict[str, float]) -> dict[str, shares.Subscriber]:
        """Everyone known, with an attempt running longer than `slow_after` counting as slow."""
        now = time.monotonic()
        with self._lock:
            known = dict(self._known)
        for sub, started in running_since.items():
            if sub in known and now - started >= self.slow_after and not known[sub].slow:
                known[sub] = dataclasses.replace(known[sub], slow=True)
        return known


class Dispatcher:
    """Claims due deliveries and sends them concurrently; `poll` claims and sends what is due."""

    def __init__(self, config: Config):
        self.config = config
        self.transport = WebhookTransport(
            ssrf.policy_for(config),
            timeout=config.delivery_timeout,
            ca_bundle=config.ca_bundle,
            pool_maxsize=config.dispatch_workers,
        )
        self.policy = shares.SharePolicy(config.dispatch_workers)
        self.health = SubscriberHealth(slow_after=min(1.0, config.delivery_timeout / 2))
        self.recorder = OutcomeRecorder(config, retry_scheduled=self.schedule_next_poll)
        self.stopping = threading.Event()
        self._senders = concurrent.futures.ThreadPoolExecutor(
            config.dispatch_workers, thread_name_prefix="sender"
        )
        self._lock = threading.Lock()
        self._in_flight: dict[concurrent.futures.Future, tuple[str, float]] = {}
        # Leased, not started: per subscription, (claim, when it was claimed).
        self._ready: dict[str, collections.deque[tuple[ClaimedDelivery, float]]] = {}
        self._polling = threading.Lock()  # close() waits for a running poll to return
        self._nothing_due = False
        self._woken = threading.Event()  # a wake the running poll has not claimed for yet
        self._stirred = threading.Event()  # an attempt ended or a wake came: stop waiting
        # Set by the long-running dispatcher: `poll_by(when)` brings the next poll forward to
        # `when` (naive UTC, as the clock gives) unless one is due sooner.
        self.poll_by: Callable[[dt.datetime], None] | None = None
        self.heartbeat = Heartbeat(every=config.poll_interval)

    def poll(self) -> int:
        """Claim and send what is due, keeping every sender busy; returns how many were claimed.

        Returns once nothing more is due (or after waiting a poll interval for a busy sender);
        attempts still in flight finish in the background.
        """
        claimed_total = 0
        with self._polling:
            self._nothing_due = False
            try:
                with kept_connection():
                    self.heartbeat.stamp(force=True)
                    claimed_total = self._poll_until_idle()
                    self.schedule_next_poll()
            except (peewee.DatabaseError, peewee.InterfaceError) as exc:
                log.error(
                    "poll stopped by a database error, retrying next poll: %s", error_line(exc)
                )
        return claimed_total

    def _poll_until_idle(self) -> int:
        claimed_total = 0
        while not self.stopping.is_set():
            self._stirred.clear()  # what happens from here on ends the wait below at once
            metrics.record_poll()  # each turn claims or waits at most a poll interval
            self.heartbeat.stamp()  # a long poll still shows as polling (once an interval at most)
            started = self._start_ready()
            claimed = 0
            # Claim to keep work ready, and whenever a sender is free that nothing ready may
            # take (what is ready may all be held back by the sharing rules).
            idle = self.config.dispatch_workers - self.in_flight_count()
            running_low = self._ready_count() < self.config.dispatch_workers
            if (running_low or idle > 0) and (not self._nothing_due or self._woken.is_set()):
                self._woken.clear()  # a wake from here on is claimed for by the next turn
                claimed = self._claim(idle)
                claimed_total += claimed
                # Until an attempt ends (or the next poll), another claim would find the same.
                self._nothing_due = not claimed
            if started or claimed:
                continue  # senders may have freed up meanwhile: look again before waiting
            if self._woken.is_set() and (running_low or idle > 0):
                continue  # a wake came during that claim: its work may not have been seen
            if self._ready_count() == 0 and not self._any_at_cap():
                break  # nothing is due that a free sender could take
            if self.in_flight_count() == 0:
                break  # nothing will change before the next poll
            if not self._stirred.wait(self.config.poll_interval):
                # A poll interval with every attempt still running (dead or slow endpoints):
                # claim again, or new work would wait for them.
                self._nothing_due = False
        return claimed_total

    def wake(self) -> None:
        """Work was made due now (a publish, a redelivery, an enable): claim it at once."""
        metrics.WAKES.inc()
        self._woken.set()
        self._stirred.set()  # a poll waiting for a sender claims again now
        if self.poll_by is not None:
            self.poll_by(clock.now())  # and if none is running, one starts now

    def schedule_next_poll(self) -> None:
        """Bring the next poll forward to the next due time when that is sooner (a retry due
        in 1.2 s with a 5 s poll is tried at 1.2 s). Runs after each poll and after outcomes
        that scheduled a retry; one index seek (`claims.next_due_after`)."""
        if self.poll_by is None:
            return
        due = next_due_after(clock.now())
        if due is not None:
            self.poll_by(due)

    def run_until_idle(self) -> int:
        """`--once`: poll, wait for in-flight attempts, repeat until nothing is due."""
        total = 0
        while not self.stopping.is_set():
            claimed = self.poll()
            self.wait_in_flight()
            total += claimed
            if not claimed and self._ready_count() == 0:
                break
        return total

    def wait_in_flight(self) -> None:
        """Wait for every attempt running now, and for its outcome to be written."""
        with self._lock:
            pending = list(self._in_flight)
        concurrent.futures.wait(pending)
        self.recorder.flush()

    def stop(self) -> None:
        """Stop claiming; attempts in flight finish (each bounded by the delivery deadline)."""
        self.stopping.set()

    def close(self) -> None:
        self.stop()
        with self._polling:  # a poll in progress returns at its next step
            self._senders.shutdown(wait=True)
        self.recorder.close()
        self._release_ready()
        self._record_stop()
        self.transport.close()
        with contextlib.suppress(Exception):
            database.close()

    # -- claiming and starting ---------------------------------------------------------------

    def _claim(self, idle: int) -> int:
        ahead = min(self.config.dispatch_batch_size, self.config.dispatch_workers * HEADROOM)
        limit = max(idle, ahead - self._ready_count())
        if limit <= 0:
            return 0
        running = self._running_by_subscription()
        with self._lock:
            for sub, waiting in self._ready.items():
                running[sub] += len(waiting)
        batch = claim_due_deliveries(
            limit,
            self.config.lease_seconds,
            policy=self.policy,
            running=running,
            known=self.health.snapshot(self._running_since()),
            headroom=HEADROOM,
        )
        claimed_at = time.monotonic()
        with self._lock:
            for claim in batch:
                self.health.claimed(claim)
                queue_ = self._ready.setdefault(claim.subscription_id, collections.deque())
                queue_.append((claim, claimed_at))
        return len(batch)

    def _start_ready(self) -> int:
        """Start ready deliveries on free senders, by the sharing rules; returns how many."""
        running = self._running()
        free = self.config.dispatch_workers - len(running)
        with self._lock:
            waiting = {sub: len(items) for sub, items in self._ready.items() if items}
        if free <= 0 or not waiting:
            return 0
        subscribers = self.health.snapshot(_oldest_start(running))
        counts = collections.Counter(sub for sub, _ in running)
        chosen = shares.choose(waiting, subscribers, counts, free, self.policy)
        fresh, stale = [], []
        stale_before = time.monotonic() - STALE_READY_SECONDS
        with self._lock:
            for sub, count in chosen.items():
                for _ in range(count):
                    claim, claimed_at = self._ready[sub].popleft()
                    (stale if claimed_at < stale_before else fresh).append(claim)
                if not self._ready[sub]:
                    del self._ready[sub]
        if stale:
            sendable = still_sendable(stale)
            gone = [claim for claim in stale if claim not in sendable]
            if gone:
                lifecycle.release(gone)  # the next claim holds, cancels or skips them
            fresh += sendable
        for claim in fresh:
            self._submit(claim)
        return len(fresh)

    def _any_at_cap(self) -> bool:
        """Whether some subscription is held back by its cap (it may have more due)."""
        subscribers = self.health.snapshot(self._running_since())
        running = self._running_by_subscription()
        return any(
            n >= self.policy.cap(subscribers[sub])
            for sub, n in running.items()
            if sub in subscribers
        )

    def _release_ready(self) -> None:
        """Leased but never started (shutdown): make them due again now, not at lease end."""
        with self._lock:
            leftover = [claim for items in self._ready.values() for claim, _ in items]
            self._ready.clear()
        if not leftover:
            return
        try:
            with kept_connection():
                lifecycle.release(leftover)
        except (peewee.DatabaseError, peewee.InterfaceError) as exc:
            log.error("could not release %d unstarted claims (%s)", len(leftover), error_line(exc))

    def _record_stop(self) -> None:
        """Say in the database that this dispatcher no longer polls (a clean stop, SIGTERM or
        the end of --once); without it `stats` shows it stopped only once its stamp is stale."""
        try:
            with kept_connection():
                self.heartbeat.stopped()
        except (peewee.DatabaseError, peewee.InterfaceError) as exc:
            log.warning(
                "could not record the stop; stats shows it once the last poll is stale (%s)", exc
            )

    # -- bookkeeping ---------------------------------------------------------------------------

    def _ready_count(self) -> int:
        with self._lock:
            return sum(len(items) for items in self._ready.values())

    def _running(self) -> list[tuple[str, float]]:
        """(subscription, start) of each attempt still running. A finished one whose done
        callback has not run yet does not count: its sender is free."""
        with self._lock:
            return [entry for future, entry in self._in_flight.items() if not future.done()]

    def in_flight_count(self) -> int:
        return len(self._running())

    def _running_by_subscription(self) -> collections.Counter:
        return collections.Counter(sub for sub, _ in self._running())

    def _running_since(self) -> dict[str, float]:
        return _oldest_start(self._running())

    def _submit(self, claim: ClaimedDelivery) -> None:
        with self._lock:
            future = self._senders.submit(self.attempt, claim)
            self._in_flight[future] = (claim.subscription_id, time.monotonic())
        future.add_done_callback(self._forget)

    def _forget(self, future) -> None:
        with self._lock:
            self._in_flight.pop(future, None)
        self._nothing_due = False  # a subscription below its cap again may have more due
        self._stirred.set()

    def attempt(self, claim: ClaimedDelivery) -> AttemptResult | None:
        """One signed attempt; its outcome goes to the recorder. Never raises: an unexpected
        error is logged, and the lease makes the delivery due again."""
        try:
            body = delivery_body(claim.event, claim.subscription_id)
            headers = signing.attempt_headers(claim.secret, claim.event.id, clock.unix(), body)
            result = self.transport.send(claim.url, body, headers)
            metrics.record_attempt(
                "ok" if result.ok else result.error_kind, result.duration_ms / 1000
            )
            self.health.observed(claim, result)
            self.recorder.put(claim, result)
            return result
        except Exception:
            metrics.record_attempt("error", None)
            log.exception(
                "attempt",
                extra={
                    "delivery": claim.id,
                    "subscription": claim.subscription_id,
                    "attempt": claim.attempt,
                    "outcome": "error",
                },
            )
            return None


def _oldest_start(running: list[tuple[str, float]]) -> dict[str, float]:
    """Per subscription, when its oldest running attempt started."""
    since: dict[str, float] = {}
    for sub, started in running:
        since[sub] = min(started, since.get(sub, started))
    return since
