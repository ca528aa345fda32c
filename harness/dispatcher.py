"""The dispatcher as a real process: `python -m dispatcher`, polling or with `--once`."""

from __future__ import annotations

import subprocess
import sys

from harness.servers import process_env
from partner_api.config import ROOT

# What every local run needs: receivers listen on loopback, over plain HTTP.
LOOPBACK_SETTINGS = {
    "PARTNER_API_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
    "PARTNER_API_ALLOW_HTTP_WEBHOOKS": "true",
}


def dispatcher_env(database_url: str, *, inherit: bool = False, **settings: str) -> dict:
    """The environment of an API or dispatcher process on `database_url` that may deliver to
    loopback receivers: PATH (or, with `inherit`, this process's whole environment), the
    database, the loopback settings and `settings`."""
    return process_env({"DATABASE_URL": database_url, **LOOPBACK_SETTINGS, **settings}, inherit)


def start_dispatcher(
    env: dict,
    *args: str,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
) -> subprocess.Popen:
    """`python -m dispatcher *args` (e.g. "--once") from the repository root with exactly
    `env`; by default its output (text) is one pipe, read with `communicate()`."""
    return subprocess.Popen(
        [sys.executable, "-m", "dispatcher", *args],
        cwd=ROOT,
        env=env,
        stdout=stdout,
        stderr=stderr,
        text=True,
    )
