"""The interactive docs in a real browser with the network cut off: headless Chromium loads
`/docs` from a live server, every other host unreachable, and the page lists the operations."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse

import pytest

from harness.net import free_port
from partner_api import create_app
from partner_api.config import Config
from partner_api.db import apply_schema

DOCS = "/api/v1/partner/docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OPERATIONS = {
    "/api/v1/partner/me",
    "/api/v1/partner/webhooks",
    "/api/v1/partner/webhooks/{subscription_id}",
    "/api/v1/partner/webhooks/{subscription_id}/test",
    "/api/v1/partner/webhooks/{subscription_id}/failures",
    "/api/v1/partner/event-types",
    "/api/v1/partner/webhooks/{subscription_id}/deliveries",
    "/api/v1/partner/webhooks/{subscription_id}/deliveries/{delivery_id}",
    "/api/v1/partner/webhooks/{subscription_id}/deliveries/{delivery_id}/redeliver",
}

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make browser installs it on Debian)"
)


@pytest.fixture
def app(tmp_path):
    """The docs need no data: one SQLite database, not a run per backend."""
    app = create_app({"PARTNER_API": Config(database_url=f"sqlite:///{tmp_path / 'docs.db'}")})
    apply_schema()
    return app


def offline_chromium(url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium that can reach only 127.0.0.1: other names do not resolve, and any
    other connection goes to a proxy on a port where nothing listens."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--proxy-server=127.0.0.1:{free_port()}",
            "--proxy-bypass-list=127.0.0.1",
            "--virtual-time-budget=20000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def page_requests(net_log_path, origin: str) -> set[str]:
    """URLs the page itself asked for (the browser's own housekeeping has no page initiator)."""
    text = net_log_path.read_text()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # cut off at exit: close the event list
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return {
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start and event.get("params", {}).get("initiator") == origin
    }


def test_docs_render_every_operation_with_no_network_but_the_app(live_server, tmp_path):
    net_log = tmp_path / "net-log.json"
    result = offline_chromium(
        live_server + DOCS, tmp_path, "--dump-dom", f"--log-net-log={net_log}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "Unable to render this definition" not in dom
    assert 'class="opblock-summary-path"' in dom
    for path in OPERATIONS:
        assert f'data-path="{path}"' in dom, path

    requested = page_requests(net_log, live_server)
    assert {urllib.parse.urlsplit(url).path for url in requested} >= {
        DOCS + "/assets/swagger-ui-bundle.js",
        DOCS + "/assets/swagger-init.js",
        "/api/v1/partner/openapi.json",
    }
    assert all(url.startswith(live_server + "/") for url in requested), requested
