"""Real servers for tests: gunicorn with the shipped config, and nginx with the shipped site."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from partner_api.config import ROOT

SITE = ROOT / "deploy" / "nginx" / "partner-api.conf"


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict, log_path: Path, workers: int = 2) -> tuple[subprocess.Popen, str]:
    """gunicorn with the shipped config on an ephemeral port; returns (process, base URL)."""
    log = open(log_path, "w")  # noqa: SIM115 (kept open for the process's lifetime)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "deploy/gunicorn.conf.py",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            str(workers),
            "wsgi:app",
        ],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    port = None

    def listening():
        nonlocal port
        found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", log_path.read_text())
        port = found and found.group(1)
        return bool(port) or process.poll() is not None

    assert wait_for(listening, 30) and port, log_path.read_text()
    base = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: log_path.read_text().count("Booting worker") >= workers, 30)
    return process, base


def nginx_binary() -> str | None:
    """Debian puts nginx in /usr/sbin, which an unprivileged PATH may lack."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_config(prefix: Path, port: int, upstream_port: int) -> Path:
    """The shipped site on loopback ports, in a main config that needs no root and no /var."""
    site = SITE.read_text()
    for shipped, local in (
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
    ):
        assert site.count(shipped) == 1, f"the site no longer has exactly one {shipped!r}"
        site = site.replace(shipped, local)
    (prefix / "site.conf").write_text(site)
    # As root the workers would switch to `nobody` and could not use these directories.
    user = "user root root;" if os.geteuid() == 0 else ""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log {prefix / "access.log"};
{temp_paths}
    include {prefix / "site.conf"};
}}
"""
    )
    return conf


def start_nginx(prefix: Path, upstream_port: int) -> tuple[subprocess.Popen, int]:
    """nginx in the foreground with its own prefix; returns (process, port)."""
    port = free_port()
    conf = nginx_config(prefix, port, upstream_port)
    error_log = prefix / "error.log"
    process = subprocess.Popen(
        [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", str(error_log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def accepting():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return process.poll() is not None

    assert wait_for(accepting, 15) and process.poll() is None, error_log.read_text()
    return process, port
