"""Real servers on loopback: gunicorn serving an app (with the shipped deploy/gunicorn.conf.py
or with gunicorn's own defaults), and nginx with the shipped site in front of it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from harness.net import free_port, listening_socket, wait_for
from partner_api.config import ROOT

SHIPPED_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
SITE = ROOT / "deploy" / "nginx" / "partner-api.conf"
# Connections per nginx worker: what Debian's /etc/nginx/nginx.conf ships, and what
# docs/production.md tells operators to set instead (the tests run with the latter).
DEBIAN_WORKER_CONNECTIONS = 768
RECOMMENDED_WORKER_CONNECTIONS = 4096


def process_env(env: dict, inherit: bool = False) -> dict:
    """`env` over this process's environment (`inherit`) or over just its PATH."""
    base = dict(os.environ) if inherit else {"PATH": os.environ["PATH"]}
    return {**base, **env}


class Gunicorn:
    """A running gunicorn master (`process`) answering at `base`; stops when used as a context
    manager exits. Its stdout and stderr are in `log_path`."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path):
        self.process = process
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 (a loopback URL)
    except urllib.error.HTTPError:
        return True  # any status: up and answering
    except OSError:
        return False
    return True


def _gunicorn_command(sock, workers: int, config, chdir: Path, pythonpath) -> list[str]:
    command = [sys.executable, "-m", "gunicorn"]
    command += ["-c", str(config)] if config is not None else ["--no-control-socket"]
    command += ["--bind", f"fd://{sock.fileno()}", "--workers", str(workers)]
    if chdir != ROOT:
        command += ["--chdir", str(chdir)]
    if pythonpath is not None:
        command += ["--pythonpath", str(pythonpath)]
    return command


# Long: one start read top to bottom (the command, the process, waiting until it serves).
def start_gunicorn(
    env: dict,
    log_path: Path,
    *,
    app: str = "wsgi:app",
    workers: int = 2,
    config: Path | None = SHIPPED_CONFIG,
    probe: str | None = None,
    chdir: Path = ROOT,
    pythonpath: Path | None = None,
    inherit_env: bool = False,
    timeout: float = 30,
    run_as: tuple[str, ...] = (),
) -> Gunicorn:
    """gunicorn serving `app` with `workers` sync workers on an ephemeral loopback port, run
    through `run_as` if given (a prefix such as `setpriv --reuid=…`, to run as another user).

    `config`: the shipped deploy/gunicorn.conf.py, or None for gunicorn's own defaults (then
    without a control socket). The port is a listening socket gunicorn inherits, so no other
    process can take it first. Returns once every worker has booted and, with `probe` (a
    path), once a request to it gets any answer; raises RuntimeError (with the log's end)
    if gunicorn exits or is not ready within `timeout` seconds."""
    sock = listening_socket()
    command = _gunicorn_command(sock, workers, config, chdir, pythonpath)
    # The app's own lines go to the log file too, as to a journal in production.
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*run_as, *command, app],
            cwd=chdir,
            env=process_env(env, inherit_env),
            pass_fds=(sock.fileno(),),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    port = sock.getsockname()[1]
    sock.close()  # gunicorn holds it now: once gunicorn stops, connections are refused
    server = Gunicorn(process, port, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            return True
        return server.log().count("Booting worker") >= workers and (
            probe is None or _answers(server.base + probe)
        )

    if not wait_for(ready, timeout) or process.poll() is not None:
        server.stop()
        raise RuntimeError(
            f"gunicorn ({app}) did not start (exit status {process.returncode}); "
            f"its log ends:\n{server.log()[-2000:]}"
        )
    return server


def nginx_binary() -> str | None:
    """Debian puts nginx in /usr/sbin, which an unprivileged PATH may lack."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_config(
    prefix: Path,
    port: int,
    upstream_port: int,
    *,
    site: Path = SITE,
    worker_connections: int = RECOMMENDED_WORKER_CONNECTIONS,
    other_site: str = "",
) -> Path:
    """`site` (the shipped one by default) on loopback ports, in a main config that needs no
    root and no /var. `other_site`: a server block included before it, on the same port."""
    text = site.read_text()
    listens = re.findall(r"listen 80( default_server)?;", text)
    assert len(listens) == 1, "the site no longer has exactly one `listen 80`"
    text = re.sub(r"listen 80( default_server)?;", rf"listen 127.0.0.1:{port}\1;", text)
    assert text.count("server 127.0.0.1:8000;") == 1, "the site no longer has one upstream"
    text = text.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
    (prefix / "site.conf").write_text(other_site.replace("PORT", str(port)) + text)
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
events {{ worker_connections {worker_connections}; }}
http {{
    access_log {prefix / "access.log"};
{temp_paths}
    include {prefix / "site.conf"};
}}
"""
    )
    return conf


def start_nginx(prefix: Path, upstream_port: int, **config) -> tuple[subprocess.Popen, int]:
    """nginx in the foreground with its own prefix directory; returns (process, port).
    `config`: nginx_config's keywords (another site file, worker_connections, another site)."""
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = nginx_config(prefix, port, upstream_port, **config)
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

    if not wait_for(accepting, 15) or process.poll() is not None:
        process.kill()
        process.wait()
        raise RuntimeError(f"nginx did not start:\n{error_log.read_text()}")
    return process, port
