"""The wake on publish: a write that makes deliveries due now wakes the dispatchers at once;
their polling stays the safety net (and finds retries that come due later).

PostgreSQL: `pg_notify` inside the writing transaction (sent at commit, so a rollback wakes
nobody), and a `Listener` per dispatcher on its own session that LISTENs. SQLite (one host): after
commit, a datagram to each dispatcher's socket in `<database file>.wake/`. Waking never blocks,
slows or fails the write: nobody listening, a full queue or a stale socket are all fine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg2
import psycopg2.extensions

from partner_api.config import Config, describe_database_url, without_passwords
from partner_api.db import after_commit, bound_url, by_backend, database

log = logging.getLogger("dispatcher")
CHANNEL = "partner_api_work_due"
SELF_TEST_SECONDS = 5.0  # a NOTIFY round trip on a working session takes milliseconds
RECONNECT_DELAYS = (1, 2, 5, 10, 30)  # seconds; the last one repeats
CONNECT_TIMEOUT = 5  # seconds
_PING = b"!"


def work_due() -> None:
    """Called inside a write transaction that makes deliveries due now (the lifecycle's
    create, release and replay): the dispatchers are woken once it commits."""
    by_backend(sqlite=_datagrams_after_commit, postgres=_notify)()


def _notify() -> None:
    # PostgreSQL sends it at commit, to every session that LISTENs (a rollback sends nothing),
    # and folds the same notification repeated in one transaction into one.
    database.execute_sql("SELECT pg_notify(%s, '')", (CHANNEL,))


def _datagrams_after_commit() -> None:
    after_commit(_send_datagrams)


def socket_directory(database_url: str) -> Path:
    """Where the dispatchers of a SQLite database keep their wake sockets: beside the file."""
    return Path(database_url[len("sqlite:///") :] + ".wake")


_sender_socket: socket.socket | None = None


def _sender() -> socket.socket:
    global _sender_socket
    if _sender_socket is None:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        _sender_socket = sender
    return _sender_socket


def _send_datagrams() -> None:
    """One datagram to each dispatcher's socket. Costs a directory listing and one send per
    dispatcher on this host; never raises (the poll delivers what a lost wake did not)."""
    directory = socket_directory(bound_url())
    try:
        names = os.listdir(directory)
    except OSError:
        return  # no dispatcher has listened here yet
    for name in names:
        path = os.path.join(directory, name)
        try:
            _sender().sendto(_PING, path)
        except ConnectionRefusedError:  # its dispatcher is gone: nobody will read it again
            with contextlib.suppress(OSError):
                os.unlink(path)
        except OSError:
            pass  # a full queue (that dispatcher is awake anyway) or a socket gone meanwhile


class Listener:
    """A dispatcher's ear: a thread that calls `on_wake()` after each wake. `close()` ends it."""

    def __init__(self, config: Config, on_wake: Callable[[], None]):
        self.config = config
        self.on_wake = on_wake
        self.listening = threading.Event()  # set while wakes can arrive (tests wait for it)
        self._stop_read, self._stop_write = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="wake", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop_write.send(_PING)
        # A connection attempt in progress is not interrupted; the thread is a daemon.
        self._thread.join(timeout=CONNECT_TIMEOUT)
        if not self._thread.is_alive():
            self._stop_read.close()
            self._stop_write.close()

    def _run(self) -> None:
        raise NotImplementedError

    def _wait(self, sock, timeout: float | None = None) -> bool:
        """Wait until `sock` is readable (True), the timeout passes or close() is called."""
        ready = _readable([sock, self._stop_read], timeout)
        return self._stop_read.fileno() not in ready and bool(ready)

    @property
    def stopping(self) -> bool:
        return bool(_readable([self._stop_read], 0))

    def _woken(self) -> None:
        try:
            self.on_wake()
        except Exception:  # the poll still runs: never let the listener die of it
            log.exception("wake on publish: could not start a poll")


def _readable(sources, timeout: float | None) -> set[int]:
    """The file descriptors of `sources` readable within `timeout` seconds (None: no limit).
    poll, not select: a busy process may hold descriptors above select's limit of 1024."""
    poller = select.poll()
    for source in sources:
        poller.register(source, select.POLLIN)
    wait_ms = None if timeout is None else int(timeout * 1000)
    return {fd for fd, _ in poller.poll(wait_ms)}


def listener(config: Config, on_wake: Callable[[], None]) -> Listener:
    """The started listener for the bound database's backend."""
    kind = by_backend(sqlite=SocketListener, postgres=NotificationListener)
    return kind(config, on_wake).start()


class SocketListener(Listener):
    """SQLite: a datagram socket of this process in the database's `.wake/` directory."""

    def _run(self) -> None:
        directory = socket_directory(self.config.database_url)
        path = directory / f"{os.getpid()}-{secrets.token_hex(4)}"
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
        except OSError as exc:  # e.g. a path over the 107 bytes a socket's name may have
            log.warning(
                "wake on publish off: cannot listen on %s (%s); polling every %ss",
                path,
                exc,
                self.config.poll_interval,
            )
            return
        sock.setblocking(False)
        log.info("wake on publish: listening on %s", path)
        self.listening.set()
        try:
            while self._wait(sock):
                with contextlib.suppress(BlockingIOError):
                    while sock.recv(64):  # one wake for however many arrived
                        pass
                self._woken()
        finally:
            self.listening.clear()
            sock.close()
            with contextlib.suppress(OSError):
                path.unlink()


class NotificationListener(Listener):
    """PostgreSQL: LISTEN on a session of its own (PARTNER_API_DISPATCHER_LISTEN_URL), checked
    with a NOTIFY round trip, reconnected with backoff while the poll carries on."""

    def _run(self) -> None:
        where = describe_database_url(self.config.listen_url)
        failures = 0
        while not self.stopping:
            try:
                connection = self._connect()
            except psycopg2.Error as exc:
                failures += 1
                self._lost(where, exc, failures)
                continue
            try:
                heard = self._round_trip(connection)
                if self.stopping:
                    return
                if not heard:
                    log.warning(
                        "wake on publish off: LISTEN on %s receives no notifications (PgBouncer "
                        "in transaction mode? set PARTNER_API_DISPATCHER_LISTEN_URL to a direct "
                        "PostgreSQL URL); polling every %ss",
                        where,
                        self.config.poll_interval,
                    )
                    return
                log.info("wake on publish: listening on %s", where)
                if failures:
                    self._woken()  # a publish may have come while no one listened
                failures = 0
                self._listen(connection)
            except (psycopg2.Error, OSError) as exc:
                failures += 1
                self._lost(where, exc, failures)
            finally:
                self.listening.clear()
                connection.close()

    def _connect(self):
        connection = psycopg2.connect(
            self.config.listen_url,
            application_name="partner-api-dispatcher-wake",
            connect_timeout=CONNECT_TIMEOUT,
        )
        connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        return connection

    def _round_trip(self, connection) -> bool:
        """Whether a NOTIFY sent from another session reaches this one: through PgBouncer in
        transaction mode the LISTEN stayed on a server connection this session no longer has."""
        token = secrets.token_hex(8)
        sender = psycopg2.connect(self.config.listen_url, connect_timeout=CONNECT_TIMEOUT)
        with contextlib.closing(sender) as other:
            other.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, token))
        deadline = time.monotonic() + SELF_TEST_SECONDS
        while self._wait(connection, max(0.0, deadline - time.monotonic())):
            connection.poll()
            if any(n.payload == token for n in connection.notifies):
                connection.notifies.clear()
                return True
        return False

    def _listen(self, connection) -> None:
        self.listening.set()
        while self._wait(connection):
            connection.poll()  # raises once the server has gone
            if connection.notifies:
                connection.notifies.clear()
                self._woken()

    def _lost(self, where: str, exc: Exception, failures: int) -> None:
        delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS)) - 1]
        if failures == 1:  # once an outage, not once a retry
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            first_line = without_passwords(first_line, self.config.listen_url)
            log.warning(
                "wake on publish: no session on %s (%s); polling meanwhile, reconnecting",
                where,
                first_line,
            )
        _readable([self._stop_read], delay)  # or until close()
