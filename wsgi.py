"""WSGI entry point: `gunicorn wsgi:app`, and `flask --app wsgi …` for the admin CLI."""

import sys

from partner_api import create_app
from partner_api.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(f"partner-api: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
