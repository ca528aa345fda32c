"""The shipped deployment files: systemd units that systemd accepts, the cron line, the
example environment file, the gunicorn settings and the PgBouncer example, checked against the
code they run."""

from __future__ import annotations

import configparser
import json
import re
import runpy
import shutil
import subprocess

import psycopg2
import pytest

from harness.pgbouncer import PgBouncer, pgbouncer_binary
from partner_api import logs
from partner_api.config import ROOT, Config
from partner_api.web import idempotency
from partner_api.web.problems import STATUS_TITLES

from .conftest import POSTGRES_URL

DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def test_both_units_run_as_a_dedicated_user_restart_and_are_hardened():
    assert [unit.name for unit in UNITS] == [
        "partner-api-dispatcher.service",
        "partner-api.service",
    ]
    for unit in UNITS:
        text = unit.read_text()
        for setting in (
            "User=partner-api",
            "Restart=on-failure",
            "StateDirectory=partner-api",
            "StateDirectoryMode=0700",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=\n",
            "EnvironmentFile=/etc/partner-api/env",
        ):
            assert setting in text, (unit.name, setting)
    api = (DEPLOY / "systemd" / "partner-api.service").read_text()
    assert "gunicorn -c deploy/gunicorn.conf.py wsgi:app" in api
    assert "PROMETHEUS_MULTIPROC_DIR=/run/partner-api/" in api


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is missing")
def test_systemd_accepts_the_units(tmp_path):
    for unit in UNITS:
        # Pointed at this checkout, so the commands exist; the rest is as shipped.
        local = tmp_path / unit.name
        local.write_text(unit.read_text().replace("/opt/partner-api", str(ROOT)))
        result = subprocess.run(
            ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and unit.name not in result.stderr, result.stderr


def test_the_cron_line_drains_once_as_the_service_user():
    lines = [
        line
        for line in (DEPLOY / "cron" / "partner-api-dispatcher").read_text().splitlines()
        if line and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)
    assert fields[:6] == ["*", "*", "*", "*", "*", "partner-api"]
    assert ". /etc/partner-api/env" in fields[6]
    assert fields[6].endswith(
        "python -m dispatcher --once >>/var/lib/partner-api/dispatcher.log 2>&1"
    )


def test_the_example_environment_file_is_valid_configuration():
    values = dict(
        line.split("=", 1)
        for line in (DEPLOY / "partner-api.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    config = Config.from_env(values)
    assert config.log_format == "json" and config.metrics_port == 9464


def test_gunicorn_settings_suit_a_small_vm_behind_nginx():
    settings = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    assert settings["bind"] == "127.0.0.1:8000"
    assert settings["control_socket_disable"] is True
    assert settings["worker_class"] == "sync" and 2 <= settings["workers"] <= 17
    assert settings["timeout"] == 30 and settings["max_requests"] > 0
    assert settings["accesslog"] is None  # the app logs requests, with their ids
    nginx_site = (DEPLOY / "nginx" / "partner-api.conf").read_text()
    assert "server 127.0.0.1:8000;" in nginx_site
    assert "proxy_read_timeout 35s;" in nginx_site  # outlasts gunicorn's worker timeout


def test_every_problem_page_of_the_nginx_site_has_the_app_s_rfc_9110_title():
    nginx_site = (DEPLOY / "nginx" / "partner-api.conf").read_text()
    pages = re.findall(r"return (\d{3}) '(\{.*?\})';", nginx_site)
    assert len(pages) >= 12  # 400, 404, 405, 408, 413, 414, 429, 431, 500, 501, 503, 505
    for status, body in pages:
        problem = json.loads(body)
        assert problem["status"] == int(status)
        assert problem["title"] == STATUS_TITLES[int(status)], body


def test_the_environment_file_says_how_the_admin_cli_reads_it():
    """Operators run the CLI with Flask's -e on the services' own file, so it uses their
    database rather than whatever DATABASE_URL the shell has."""
    text = (DEPLOY / "partner-api.env").read_text()
    assert "flask --app wsgi -e /etc/partner-api/env " in text
    assert "python-dotenv==" in (ROOT / "requirements.txt").read_text()  # what -e needs


def test_the_nginx_site_is_the_default_server_and_the_install_removes_debian_s():
    nginx_site = (DEPLOY / "nginx" / "partner-api.conf").read_text()
    assert re.search(r"^\s*listen 80 default_server;", nginx_site, re.M)
    install = (ROOT / "docs" / "production.md").read_text()
    assert "rm -f /etc/nginx/sites-enabled/default" in install


def test_the_nginx_site_passes_on_every_request_header_the_app_reads():
    """nginx passes gunicorn only the headers it names: one the app reads must be among them."""
    reads = [
        match
        for path in (ROOT / "partner_api").rglob("*.py")
        for match in re.findall(r"request\.headers\.get\(([^,)]+)", path.read_text())
    ]
    assert sorted(reads) == ['"Authorization"', "HEADER", "logs.REQUEST_ID_HEADER"]
    nginx_site = (DEPLOY / "nginx" / "partner-api.conf").read_text()
    assert "proxy_pass_request_headers off;" in nginx_site
    passed = set(re.findall(r"proxy_set_header (\S+) ", nginx_site))
    read = {"Authorization", idempotency.HEADER, logs.REQUEST_ID_HEADER, "Content-Type", "Host"}
    assert read <= passed


def test_the_production_docs_list_exactly_the_nginx_site_s_refusals():
    nginx_site = (DEPLOY / "nginx" / "partner-api.conf").read_text()
    pages = {
        (int(status), json.loads(body)["code"])
        for status, body in re.findall(r"return (\d{3}) '(\{.*?\})';", nginx_site)
    }
    docs = (ROOT / "docs" / "production.md").read_text()
    table = set(re.findall(r"^\| (\d{3}) \| `(\w+)` \|", docs, re.M))
    assert {(int(status), code) for status, code in table} == pages


def shipped_pgbouncer_settings() -> dict:
    """The [pgbouncer] section of deploy/pgbouncer.ini."""
    parser = configparser.ConfigParser(comment_prefixes=(";",), interpolation=None)
    parser.read_string((DEPLOY / "pgbouncer.ini").read_text())
    return dict(parser["pgbouncer"])


def test_the_pgbouncer_example_pools_transactions_for_the_hosts_it_describes():
    settings = shipped_pgbouncer_settings()
    assert settings["pool_mode"] == "transaction"
    # Its example: 4 API hosts of 5 workers, 2 dispatchers whose pools hold their senders + 4
    # (dispatcher/__main__.py), a few admin commands; room for twice as many hosts.
    clients = 4 * 5 + 2 * (Config().dispatch_workers + 4) + 5
    assert int(settings["max_client_conn"]) >= 2 * clients
    # Server connections stay below PostgreSQL's default max_connections (100), leaving room
    # for the dispatchers' direct LISTEN connections and an operator.
    assert int(settings["default_pool_size"]) + int(settings["reserve_pool_size"]) <= 80
    assert settings["auth_type"] == "scram-sha-256"


@pytest.mark.skipif(not POSTGRES_URL, reason="PARTNER_API_TEST_POSTGRES_URL is not set")
@pytest.mark.skipif(
    pgbouncer_binary() is None, reason="pgbouncer is not installed (make pgbouncer)"
)
def test_pgbouncer_runs_with_the_example_s_pool_settings():
    """Every setting but the host's own (address, socket, auth, files) as shipped: PgBouncer
    refuses an unknown or malformed one, and the pool answers a statement."""
    host_specific = {"listen_addr", "listen_port", "unix_socket_dir", "auth_type", "auth_file"}
    host_specific |= {"logfile", "pidfile"}
    portable = {k: v for k, v in shipped_pgbouncer_settings().items() if k not in host_specific}
    assert portable["pool_mode"] == "transaction" and "query_wait_timeout" in portable
    with PgBouncer(POSTGRES_URL, settings=portable) as bouncer_url:
        admin = psycopg2.connect(bouncer_url.rsplit("/", 1)[0] + "/pgbouncer")
        admin.autocommit = True  # PgBouncer's console takes no transactions
        try:
            with admin.cursor() as cursor:
                cursor.execute("SHOW CONFIG")
                running = {row[0]: row[1] for row in cursor.fetchall()}
        finally:
            admin.close()
    assert {key: running[key] for key in portable} == portable
