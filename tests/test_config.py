"""Configuration: defaults, parsing, and one clear line for each bad value."""

import ipaddress
import os
import subprocess
import sys

import pytest

from partner_api.config import ROOT, Config, ConfigError, describe_database_url
from partner_api.delivery import retry


def test_defaults_match_the_contract():
    config = Config.from_env({})
    assert config.retry_schedule == (60, 300, 1800, 7200, 21600, 86400)
    assert retry.max_attempts(config.retry_schedule) == 7
    assert config.delivery_timeout == 10
    assert config.poll_interval == 2
    assert config.auto_disable_after == 20
    assert config.webhook_allow_cidrs == ()
    assert config.allow_http_webhooks is False
    assert config.ca_bundle is None
    assert config.default_rate_limit == 600
    assert config.retention_days == 30
    assert config.database_url.startswith("sqlite:///") and "instance" in config.database_url
    assert config.metrics_port is None and config.metrics_host == "127.0.0.1"
    assert config.log_format == "text"
    assert config.dispatcher_wake is True
    assert config.dispatcher_listen_url is None and config.listen_url == config.database_url
    assert (config.dns_lookups_per_org, config.dns_lookups_total) == (1, 2)


def test_the_listen_url_and_the_wake_switch_are_parsed():
    config = Config.from_env(
        {
            "DATABASE_URL": "postgresql://app@pgbouncer:6432/partner",
            "PARTNER_API_DISPATCHER_LISTEN_URL": "postgresql://app@db:5432/partner",
            "PARTNER_API_DISPATCHER_WAKE": "off",
        }
    )
    assert config.listen_url == "postgresql://app@db:5432/partner"
    assert config.dispatcher_wake is False


def test_the_dns_lookup_caps_are_parsed():
    config = Config.from_env(
        {"PARTNER_API_DNS_LOOKUPS_PER_ORG": "3", "PARTNER_API_DNS_LOOKUPS_TOTAL": " 12 "}
    )
    assert (config.dns_lookups_per_org, config.dns_lookups_total) == (3, 12)


def test_operations_settings_are_parsed():
    config = Config.from_env(
        {
            "PARTNER_API_METRICS_PORT": "9464",
            "PARTNER_API_METRICS_HOST": "0.0.0.0",
            "PARTNER_API_LOG_FORMAT": "JSON",
        }
    )
    assert (config.metrics_port, config.metrics_host, config.log_format) == (
        9464,
        "0.0.0.0",
        "json",
    )


def test_values_are_parsed():
    config = Config.from_env(
        {
            "PARTNER_API_RETRY_SCHEDULE": "1, 2,3",
            "PARTNER_API_DELIVERY_TIMEOUT": "2.5",
            "PARTNER_API_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8,::1/128",
            "PARTNER_API_ALLOW_HTTP_WEBHOOKS": "true",
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
        }
    )
    assert config.retry_schedule == (1, 2, 3) and retry.max_attempts(config.retry_schedule) == 4
    assert config.delivery_timeout == 2.5
    assert config.webhook_allow_cidrs == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert config.allow_http_webhooks is True
    assert config.database_url == "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize(
    "name,value",
    [
        ("PARTNER_API_POLL_INTERVAL", "-1"),
        ("PARTNER_API_POLL_INTERVAL", "soon"),
        ("PARTNER_API_DELIVERY_TIMEOUT", "0"),
        ("PARTNER_API_RETRY_SCHEDULE", "60,five"),
        ("PARTNER_API_RETRY_SCHEDULE", "60,,300"),
        ("PARTNER_API_RETRY_SCHEDULE", "60,-5"),
        ("PARTNER_API_AUTO_DISABLE_AFTER", "0"),
        ("PARTNER_API_DEFAULT_RATE_LIMIT", "1.5"),
        ("PARTNER_API_ALLOW_HTTP_WEBHOOKS", "maybe"),
        ("PARTNER_API_RETENTION_DAYS", "0"),
        ("PARTNER_API_RETENTION_DAYS", "thirty"),
        ("PARTNER_API_RETENTION_DAYS", "3651"),
        ("PARTNER_API_WEBHOOK_ALLOW_CIDRS", "127.0.0.0/33"),
        ("PARTNER_API_CA_BUNDLE", "/nonexistent/ca.pem"),
        ("PARTNER_API_CA_BUNDLE", str(ROOT / "schema.sql")),
        ("PARTNER_API_DELIVERY_TIMEOUT", "1e12"),
        ("PARTNER_API_DELIVERY_TIMEOUT", "nan"),
        ("PARTNER_API_POLL_INTERVAL", "1e300"),
        ("PARTNER_API_RETRY_SCHEDULE", "999999999999"),
        ("PARTNER_API_RETRY_SCHEDULE", ",".join(["60"] * 21)),
        ("PARTNER_API_DISPATCH_WORKERS", "100000"),
        ("PARTNER_API_DEFAULT_RATE_LIMIT", "99999999999"),
        ("DATABASE_URL", "mysql://root@localhost/test"),
        ("DATABASE_URL", "sqlite:///:memory:"),
        ("DATABASE_URL", "sqlite:///"),
        ("DATABASE_URL", "sqlite:///data/api?.sqlite3"),
        ("DATABASE_URL", "postgresql://app:pw@db:notaport/partner"),
        ("DATABASE_URL", "postgresql://"),
        ("PARTNER_API_METRICS_PORT", "65536"),
        ("PARTNER_API_METRICS_PORT", "-1"),
        ("PARTNER_API_METRICS_PORT", "http"),
        ("PARTNER_API_METRICS_HOST", "localhost:9000"),
        ("PARTNER_API_LOG_FORMAT", "xml"),
        ("PARTNER_API_DNS_LOOKUPS_PER_ORG", "0"),
        ("PARTNER_API_DNS_LOOKUPS_PER_ORG", "1001"),
        ("PARTNER_API_DNS_LOOKUPS_PER_ORG", "one"),
        ("PARTNER_API_DNS_LOOKUPS_TOTAL", "0"),
        ("PARTNER_API_DNS_LOOKUPS_TOTAL", "10001"),
        ("PARTNER_API_DNS_LOOKUPS_TOTAL", "²"),
        ("PARTNER_API_DISPATCHER_WAKE", "sometimes"),
        ("PARTNER_API_DISPATCHER_LISTEN_URL", "sqlite:///instance/partner_api.sqlite3"),
        ("PARTNER_API_DISPATCHER_LISTEN_URL", "postgresql://app:pw@db:notaport/partner"),
        ("PROMETHEUS_MULTIPROC_DIR", str(ROOT / "schema.sql")),
    ],
)
def test_bad_value_is_refused_naming_the_variable(name, value):
    with pytest.raises(ConfigError) as excinfo:
        Config.from_env({name: value})
    assert str(excinfo.value).startswith(name)
    assert str(excinfo.value).count(name) == 1  # named once, not "NAME: NAME: …"


@pytest.mark.parametrize(
    "url", ["mysql://app:s3cret@db/partner", "postgresql://app:s3cret@db:nope/partner"]
)
@pytest.mark.parametrize("name", ["DATABASE_URL", "PARTNER_API_DISPATCHER_LISTEN_URL"])
def test_a_refused_database_url_is_never_shown_with_its_password(url, name):
    with pytest.raises(ConfigError) as excinfo:
        Config.from_env({name: url})
    assert "s3cret" not in str(excinfo.value) and "app:***@db" in str(excinfo.value)


def test_a_malformed_database_url_stops_the_cli_with_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://app:s3cret@db:nope/partner"}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "stats"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "DATABASE_URL" in result.stderr and "s3cret" not in result.stderr


def test_bad_value_stops_the_cli_with_one_line(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "PARTNER_API_POLL_INTERVAL": "-1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "init-db"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "PARTNER_API_POLL_INTERVAL" in line]
    assert lines and "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_pem_ca_bundle_is_accepted(tmp_path):
    trustme = pytest.importorskip("trustme")
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    assert Config.from_env({"PARTNER_API_CA_BUNDLE": str(bundle)}).ca_bundle == str(bundle)


def test_domain_error_codes_map_to_their_http_status():
    from partner_api.errors import DomainError
    from partner_api.web.problems import from_domain_error, status_for

    assert status_for("subscription_not_found") == 404
    assert status_for("secret_mismatch") == 403
    assert status_for("subscription_limit_reached") == 409
    assert status_for("invalid_cursor") == 400
    assert status_for("reserved_scope") == 422  # any other refusal is a validation error
    error = from_domain_error(DomainError("invalid_url", "Bad.", field="url"))
    assert (error.status, error.code) == (422, "invalid_url")
    assert error.errors == [{"location": "json", "field": "url", "message": "Bad."}]
    assert from_domain_error(DomainError("subscription_not_found", "No.")).errors is None


@pytest.mark.parametrize(
    "url,shown",
    [
        (
            "postgresql://app:s3cret@db.internal:5432/partner",
            "postgresql://app:***@db.internal:5432/partner",
        ),
        ("postgres://app:p%40ss%3Aw0rd@db/partner", "postgres://app:***@db/partner"),
        ("postgresql://app@db:5432/partner", "postgresql://app@db:5432/partner"),
        ("postgresql://db.internal/partner", "postgresql://db.internal/partner"),
        ("postgresql://:s3cret@db/partner", "postgresql://:***@db/partner"),
        # Not valid URLs, but an operator may write them: the password still never shows.
        ("postgresql://app:pa@ss/w?rd@db/partner", "postgresql://app:***@db/partner"),
        (
            "postgresql://app@db/partner?sslmode=require&password=s3cret",
            "postgresql://app@db/partner?sslmode=require&password=***",
        ),
        (
            "sqlite:////var/lib/partner-api/partner_api.sqlite3",
            "sqlite:////var/lib/partner-api/partner_api.sqlite3",
        ),
    ],
)
def test_a_database_url_is_shown_without_its_password(url, shown):
    assert describe_database_url(url) == shown
    for secret in ("s3cret", "p%40ss", "w0rd", "pa@ss"):
        assert secret not in describe_database_url(url)


def test_a_relative_sqlite_path_is_shown_as_the_file_it_opens():
    assert describe_database_url("sqlite:///instance/x.sqlite3") == (
        f"sqlite:///{os.path.join(os.getcwd(), 'instance', 'x.sqlite3')}"
    )
