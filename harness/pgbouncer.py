"""PgBouncer on loopback in front of a PostgreSQL database, for tests and benchmarks:
`with PgBouncer(url) as pooled_url:` runs Debian's pgbouncer on a free port until the block ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import psycopg2

from harness.net import free_port, wait_for

MAX_CLIENT_CONN = 1000  # far above what a test opens: gunicorn workers × their pools, dispatchers
DEFAULT_POOL_SIZE = 10  # server connections per database and user: what PgBouncer is for


def pgbouncer_binary() -> str | None:
    """Debian puts pgbouncer in /usr/sbin, which an unprivileged PATH may lack."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


class PgBouncer:
    """PgBouncer in `pool_mode` in front of the database of `postgres_url`, listening on a free
    127.0.0.1 port with a generated ini (trust auth for the URL's user, no Unix socket, its pid
    and log files in a temporary directory). `settings`: more [pgbouncer] settings, or other
    values for the pool's (e.g. those of deploy/pgbouncer.ini); the address, auth and files
    above always stay the harness's own. Entering starts it and returns
    the URL through it, once a statement has gone through; leaving stops it. `log()` reads its
    log."""

    def __init__(
        self, postgres_url: str, pool_mode: str = "transaction", settings: dict | None = None
    ):
        self.target = urllib.parse.urlsplit(postgres_url)
        self.settings = {
            "pool_mode": pool_mode,
            "max_client_conn": MAX_CLIENT_CONN,
            "default_pool_size": DEFAULT_POOL_SIZE,
            "ignore_startup_parameters": "extra_float_digits",
            **(settings or {}),
        }
        self.process: subprocess.Popen | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None

    @property
    def directory(self) -> Path:
        return Path(self._scratch.name)

    def log(self) -> str:
        """Its log file, or what it wrote to stderr when it stopped before opening that."""
        for name in ("pgbouncer.log", "stderr.log"):
            path = self.directory / name
            if path.exists() and path.stat().st_size:
                return path.read_text(errors="replace")
        return ""

    def ini(self, port: int) -> str:
        """The configuration: the target database under its own name, reached as the URL says."""
        target, database = self.target, self.target.path.lstrip("/")
        server = f"host={target.hostname or '127.0.0.1'} port={target.port or 5432} "
        server += f"dbname={database} user={target.username or 'postgres'}"
        if target.password:
            server += f" password={urllib.parse.unquote(target.password)}"
        local = {
            "listen_addr": "127.0.0.1",
            "listen_port": port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": self.directory / "users.txt",
            "admin_users": target.username or "postgres",  # SHOW on the `pgbouncer` database
            "pidfile": self.directory / "pgbouncer.pid",
            "logfile": self.directory / "pgbouncer.log",
        }
        lines = [f"{name} = {value}" for name, value in (self.settings | local).items()]
        return "\n".join(["[databases]", f"{database} = {server}", "[pgbouncer]", *lines, ""])

    def pooled_url(self, port: int) -> str:
        return urllib.parse.urlunsplit(self.target._replace(netloc=self._netloc(port)))

    def _netloc(self, port: int) -> str:
        user = self.target.username or "postgres"
        password = f":{self.target.password}" if self.target.password else ""
        return f"{user}{password}@127.0.0.1:{port}"

    def __enter__(self) -> str:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed: run `make pgbouncer`")
        self._scratch = tempfile.TemporaryDirectory(prefix="pgbouncer-")
        user = self.target.username or "postgres"
        (self.directory / "users.txt").write_text(f'"{user}" ""\n')
        command = [binary]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root; it switches to postgres
            shutil.chown(self.directory, "postgres")
            command += ["-u", "postgres"]
        for _attempt in range(3):  # a free port may be taken before pgbouncer binds it
            port = free_port()
            (self.directory / "pgbouncer.ini").write_text(self.ini(port))
            with open(self.directory / "stderr.log", "wb") as stderr:  # what comes before its log
                self.process = subprocess.Popen(
                    [*command, str(self.directory / "pgbouncer.ini")],
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            url = self.pooled_url(port)
            if wait_for(lambda u=url: self._answers(u), 15) and self.process.poll() is None:
                return url
            self._stop()
        log = self.log()
        self._scratch.cleanup()
        raise RuntimeError(f"pgbouncer did not start; its log ends:\n{log[-2000:]}")

    def _answers(self, url: str) -> bool:
        if self.process.poll() is not None:
            return True  # exited: stop waiting
        try:
            connection = psycopg2.connect(url, connect_timeout=2)
        except psycopg2.OperationalError:
            return False
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        finally:
            connection.close()

    def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: PgBouncer's immediate shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __exit__(self, *exc):
        self._stop()
        self._scratch.cleanup()
