"""gunicorn settings for a small VM (1-2 vCPUs) behind the nginx site in deploy/nginx/.

`gunicorn -c deploy/gunicorn.conf.py wsgi:app`; flags on the command line override these.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

# The `gunicorn` script does not put the working directory on sys.path before reading this.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from partner_api.config import Config, ConfigError  # noqa: E402
from partner_api.logs import gunicorn_logconfig  # noqa: E402

try:
    _config = Config.from_env()
except ConfigError as exc:
    print(f"partner-api: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

# Loopback only: nginx is the one client, and it buffers whole requests first, so a slow or
# half-sent request never holds one of these synchronous workers.
bind = "127.0.0.1:8000"
# Requests mostly wait on the database; 2 per core + 1 keeps a small VM busy without swapping.
workers = 2 * (os.cpu_count() or 1) + 1
worker_class = "sync"
timeout = 30  # a worker stuck longer than this is killed and replaced
graceful_timeout = 30
keepalive = 2
# Recycle workers now and then, so a slow leak cannot grow for months; jitter staggers them.
max_requests = 2000
max_requests_jitter = 200
# The same limits nginx applies, as a second line if gunicorn is ever reached directly.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
forwarded_allow_ips = "127.0.0.1"
# Heartbeat files on tmpfs: a slow disk must not make the arbiter think a worker hangs
# (gunicorn creates them with mkstemp, so a shared directory is safe).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
control_socket_disable = True  # no control socket to protect: signals and systemd suffice
errorlog = "-"
accesslog = None  # the app logs each request itself, with its request id
logconfig_dict = gunicorn_logconfig(_config.log_format)

_own_metrics_dir = None


def when_ready(server):
    """Once listening (a failed bind leaves nothing behind), give the workers one directory to
    share their metrics in, emptied of an old run's."""
    global _own_metrics_dir
    directory = _config.prometheus_multiproc_dir
    if directory is None:
        directory = _own_metrics_dir = tempfile.mkdtemp(prefix="partner-api-metrics-")
    else:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()  # an old run's counts would be added to this one's
    # prometheus_client reads this when the workers import it, after this fork point.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    server.log.info("workers share their metrics in %s", directory)


def child_exit(server, worker):
    """A dead worker's counters and histograms are merged into this run's file of them (so the
    sums stay right and the files do not grow with every recycled worker); its live gauges go."""
    from prometheus_client import multiprocess

    from partner_api.web import metrics_files

    multiprocess.mark_process_dead(worker.pid)
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    metrics_files.merge_dead_workers(Path(directory), [worker.pid], run=os.getpid())


def on_exit(server):
    if _own_metrics_dir is not None:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
