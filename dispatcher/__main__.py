"""`python -m dispatcher`: poll for due deliveries every PARTNER_API_POLL_INTERVAL seconds.

`--once` drains what is due now and exits (cron, tests). SIGTERM/SIGINT stop claiming, let
in-flight attempts finish (bounded by the delivery deadline) and exit 0.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import signal
import sys

from apscheduler.schedulers.blocking import BlockingScheduler

from dispatcher.dispatch import Dispatcher
from partner_api import db
from partner_api.config import Config, ConfigError

log = logging.getLogger("dispatcher")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dispatcher", description=__doc__)
    parser.add_argument("--once", action="store_true", help="drain what is due now and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Not a line per poll, nor per tick skipped while a long poll is still sending.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"dispatcher: configuration error: {exc}", file=sys.stderr)
        return 2
    # One pooled connection per sender, plus the polling thread and some slack.
    db.bind(config.database_url, max_connections=config.dispatch_workers + 4)
    try:
        db.check_schema()
    except RuntimeError as exc:
        print(f"dispatcher: {exc}", file=sys.stderr)
        return 2
    dispatcher = Dispatcher(config)
    scheduler = None if args.once else BlockingScheduler()

    def shutdown(signum, frame):
        if dispatcher.stopping.is_set():
            return  # a second Ctrl-C or a SIGTERM after SIGINT: already on the way out
        log.info("received %s: finishing in-flight attempts", signal.Signals(signum).name)
        dispatcher.stop()  # the running poll returns at its next step
        if scheduler is not None and scheduler.running:
            # No waiting inside a signal handler: close() below waits for the poll.
            scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        if args.once:
            log.info("drained %d deliveries", dispatcher.run_until_idle())
        else:
            scheduler.add_job(
                dispatcher.drain,
                "interval",
                seconds=config.poll_interval,
                id="drain",
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.datetime.now(datetime.UTC),  # first poll right away
            )
            log.info("dispatcher polling every %ss", config.poll_interval)
            scheduler.start()
    finally:
        dispatcher.close()  # waits for in-flight attempts
    log.info("dispatcher stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
