"""`wsgi:app` with webhook hosts resolved by a `FakeResolver`, for gunicorn-run tests and
benchmarks: `gunicorn harness.fake_dns_app:app` with HARNESS_DNS set to a JSON table of
name → list of addresses, or `"hang"` for a name whose lookup never answers.
"""

import json
import os

from harness.dns import FakeResolver
from partner_api import create_app
from partner_api.config import Config

app = create_app(
    {"PARTNER_API": Config.from_env(resolver=FakeResolver(json.loads(os.environ["HARNESS_DNS"])))}
)
