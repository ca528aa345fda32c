"""WSGI entry point: `gunicorn wsgi:app`, and `flask --app wsgi …` for the admin CLI."""

import sys

from partner_api import create_app
from partner_api.config import ConfigError

# gunicorn's "worker failed to boot" status: its master stops, instead of starting the worker
# again (and printing the same line) forever.
WORKER_BOOT_ERROR = 3

try:
    app = create_app()
except ConfigError as exc:
    print(f"partner-api: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(WORKER_BOOT_ERROR if "gunicorn.arbiter" in sys.modules else 2) from None
