"""A real PgBouncer (Debian's `pgbouncer`) in front of a PostgreSQL database, on a free
loopback port: `with PgBouncer(postgres_url, pool_mode="transaction") as pooled_url: ...`."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

from harness.net import free_port, wait_for

BINARY_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable, or None where it is not installed (`make pgbouncer`)."""
    found = shutil.which("pgbouncer")
    return found or next((path for path in BINARY_PATHS if os.access(path, os.X_OK)), None)


class PgBouncer:
    """PgBouncer between the caller and the database of `postgres_url` (trust auth, as the
    test server's), in `pool_mode`; entering yields the same URL through it."""

    def __init__(self, postgres_url: str, pool_mode: str = "transaction"):
        self.target = urllib.parse.urlsplit(postgres_url)
        self.pool_mode = pool_mode
        self.port = free_port()
        self._scratch = None
        self._process = None

    def __enter__(self) -> str:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (make pgbouncer)")
        self._scratch = tempfile.TemporaryDirectory()
        scratch = Path(self._scratch.name)
        command_user = []
        if os.geteuid() == 0:  # pgbouncer refuses to run as root: as nobody, who owns its log
            nobody = pwd.getpwnam("nobody")
            os.chown(scratch, nobody.pw_uid, nobody.pw_gid)
            command_user = ["-u", "nobody"]
        ini = scratch / "pgbouncer.ini"
        ini.write_text(self._ini(scratch))
        (scratch / "users.txt").write_text(f'"{self.target.username or "postgres"}" ""\n')
        command = [binary, *command_user, str(ini)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: self._process.poll() is not None or self._accepting(), 20)
        if not self._accepting():
            log = (
                (scratch / "pgbouncer.log").read_text()
                if (scratch / "pgbouncer.log").exists()
                else ""
            )
            self.__exit__()
            raise RuntimeError(f"pgbouncer did not start: {log.strip()[-500:]}")
        return self.url

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._scratch is not None:
            self._scratch.cleanup()

    @property
    def url(self) -> str:
        user = self.target.username or "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.port}{self.target.path}"

    def _ini(self, scratch: Path) -> str:
        database = self.target.path.lstrip("/")
        return (
            "[databases]\n"
            f"{database} = host={self.target.hostname or '127.0.0.1'} "
            f"port={self.target.port or 5432} dbname={database}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {scratch / 'users.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            "max_client_conn = 500\ndefault_pool_size = 20\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {scratch / 'pgbouncer.log'}\n"
        )

    def _accepting(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0
