"""`python -m dispatcher`: poll for due deliveries every PARTNER_API_POLL_INTERVAL seconds,
and at once when woken by a publish (`delivery/wake.py`; PARTNER_API_DISPATCHER_WAKE).

`--once` drains what is due now and exits (cron, tests), serving no metrics. SIGTERM/SIGINT
stop claiming, let in-flight attempts finish (bounded by the delivery deadline) and exit 0.
The long-running dispatcher also applies the retention (PARTNER_API_RETENTION_DAYS) once a day.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import signal
import sys
import threading

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.blocking import BlockingScheduler

from dispatcher import metrics
from dispatcher.dispatch import Dispatcher
from partner_api import clock, db, logs
from partner_api.config import Config, ConfigError
from partner_api.db import database
from partner_api.delivery import retention, wake

log = logging.getLogger("dispatcher")
FIRST_PRUNE_AFTER = datetime.timedelta(minutes=5)  # not in the way of a restart's first polls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dispatcher", description=__doc__)
    parser.add_argument("--once", action="store_true", help="drain what is due now and exit")
    args = parser.parse_args(argv)
    try:
        config = _load_config()
    except (ConfigError, RuntimeError) as exc:
        print(f"dispatcher: {exc}", file=sys.stderr)
        return 2
    dispatcher = Dispatcher(config)
    try:
        metrics_server = None if args.once else _serve_metrics(config, dispatcher)
    except OSError as exc:
        print(
            f"dispatcher: cannot serve metrics on {config.metrics_host}:{config.metrics_port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        dispatcher.close()
        return 2
    if args.once and config.metrics_port is not None:
        # A scrape target that lives for a second a minute makes `up == 0` fire all the time,
        # and a port taken by the long-running dispatcher would fail the run.
        log.info(
            "--once serves no metrics: PARTNER_API_METRICS_PORT ignored "
            "(the API's /metrics carries the queue gauges)"
        )
    scheduler = None if args.once else _scheduler(dispatcher, config)
    _stop_on_signals(dispatcher, scheduler)
    listener = None
    try:
        if scheduler is None:
            log.info("drained %d deliveries", dispatcher.run_until_idle())
        else:
            log.info("dispatcher polling every %ss", config.poll_interval)
            if config.dispatcher_wake:
                dispatcher.poll_by = PollBy(scheduler)
                listener = wake.listener(config, dispatcher.wake)
            else:
                log.info("wake on publish off (PARTNER_API_DISPATCHER_WAKE=false)")
            scheduler.start()
    finally:
        if listener is not None:
            listener.close()
        dispatcher.close()  # waits for in-flight attempts
        if metrics_server is not None:
            metrics_server.shutdown()
    log.info("dispatcher stopped")
    return 0


def _load_config() -> Config:
    """The validated configuration, with the database bound and its schema checked."""
    try:
        config = Config.from_env()
    except ConfigError as exc:
        raise ConfigError(f"configuration error: {exc}") from None
    logs.configure_logging(config.log_format)
    # Not a line per poll, nor per tick skipped while a long poll is still sending.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # One pooled connection per sender, plus the polling thread and some slack.
    db.bind(config.database_url, max_connections=config.dispatch_workers + 4)
    db.check_schema()  # RuntimeError with one clear line
    return config


def _serve_metrics(config: Config, dispatcher: Dispatcher):
    """The /metrics endpoint on PARTNER_API_METRICS_PORT, or None when it is unset."""
    if config.metrics_port is None:
        return None
    server = metrics.serve(
        config.metrics_host,
        config.metrics_port,
        dispatcher.in_flight_count,
        config.dispatch_workers,
    )
    host, port = server.server_address[:2]
    log.info("dispatcher metrics on http://%s:%d/metrics", host, port)
    return server


def _scheduler(dispatcher: Dispatcher, config: Config) -> BlockingScheduler:
    """Polls every PARTNER_API_POLL_INTERVAL and the daily prune, each in its own thread."""
    # One worker thread for polls: they never overlap, and the poll keeps one database
    # connection. The prune has its own, so a long prune never delays a poll.
    scheduler = BlockingScheduler(
        executors={"default": ThreadPoolExecutor(1), "retention": ThreadPoolExecutor(1)}
    )
    now = datetime.datetime.now(datetime.UTC)
    scheduler.add_job(
        dispatcher.poll,
        "interval",
        seconds=config.poll_interval,
        id="poll",
        # A wake that comes as a poll ends queues one more behind it (the one executor thread
        # runs them in turn), however late that one starts: a wake is never skipped.
        max_instances=2,
        misfire_grace_time=None,
        coalesce=True,
        next_run_time=now,  # first poll right away
    )
    scheduler.add_job(
        prune_job,
        "interval",
        days=1,
        args=(config, dispatcher.stopping.is_set),
        id="prune",
        executor="retention",
        max_instances=1,
        coalesce=True,
        next_run_time=now + FIRST_PRUNE_AFTER,
    )
    return scheduler


class PollBy:
    """Brings the next poll forward to a time (`dispatcher.poll_by`): now for a wake, or when
    the next delivery comes due if that is sooner than the next poll."""

    def __init__(self, scheduler: BlockingScheduler):
        self.scheduler = scheduler
        self._lock = threading.Lock()  # a wake and a due time never undo each other

    def __call__(self, when: datetime.datetime) -> None:
        when = when.replace(tzinfo=datetime.UTC)  # the clock's naive UTC
        with self._lock, contextlib.suppress(JobLookupError):
            job = self.scheduler.get_job("poll")
            if job is not None and job.next_run_time is not None and when < job.next_run_time:
                self.scheduler.modify_job("poll", next_run_time=when)


def prune_job(config: Config, should_stop=None) -> dict | None:
    """The daily retention run: one log line with the counts (or the error), never raises."""
    started = clock.monotonic()
    try:
        with database.connection_context():
            counts = retention.prune(config.retention_days, should_stop=should_stop)
    except Exception:
        log.exception("prune failed; it runs again tomorrow")
        return None
    log.info(
        "prune older_than_days=%d deliveries=%d delivery_failures=%d events=%d "
        "dispatcher_polls=%d idempotency_keys=%d duration_s=%.1f",
        config.retention_days,
        counts["deliveries"],
        counts["delivery_failures"],
        counts["events"],
        counts["dispatcher_polls"],
        counts["idempotency_keys"],
        clock.monotonic() - started,
    )
    return counts


def _stop_on_signals(dispatcher: Dispatcher, scheduler: BlockingScheduler | None) -> None:
    """SIGTERM/SIGINT: stop claiming; main() then waits for the attempts in flight."""

    def shutdown(signum, frame):
        if dispatcher.stopping.is_set():
            return  # a second Ctrl-C or a SIGTERM after SIGINT: already on the way out
        log.info("received %s: finishing in-flight attempts", signal.Signals(signum).name)
        dispatcher.stop()  # the running poll returns at its next step
        if scheduler is not None and scheduler.running:
            # No waiting inside a signal handler: close() in main() waits for the poll.
            scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)


if __name__ == "__main__":
    raise SystemExit(main())
