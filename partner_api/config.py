"""The one configuration object: every environment variable is read and validated here, once.

Nothing else in the code base reads os.environ; a bad value stops the process with one clear line.
A leaf: parsing and validation only. The policies built from these settings live with their
domain (`delivery/ssrf.policy_for`, `delivery/retry`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import ssl
import urllib.parse
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = f"sqlite:///{ROOT / 'instance' / 'partner_api.sqlite3'}"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Validated settings shared by the API and the dispatcher."""

    database_url: str = DEFAULT_DATABASE_URL
    retry_schedule: tuple[int, ...] = (60, 300, 1800, 7200, 21600, 86400)
    delivery_timeout: float = 10.0
    poll_interval: float = 2.0
    auto_disable_after: int = 20
    auto_disable_min_seconds: int = 3600  # 0: the count alone disables
    webhook_allow_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allow_http_webhooks: bool = False
    ca_bundle: str | None = None
    default_rate_limit: int = 600
    max_subscriptions_per_org: int = 25
    dispatch_batch_size: int = 50
    dispatch_workers: int = 10
    retention_days: int = 30
    # The wake on publish (delivery/wake.py): whether the dispatcher listens for publishes, and
    # on PostgreSQL the session URL it LISTENs on (None: database_url).
    dispatcher_wake: bool = True
    dispatcher_listen_url: str | None = None
    # Not from the environment: how webhook host names are resolved (None: the system's
    # resolver; tests inject a table), and how long a create may wait on DNS before answering
    # host_unresolvable.
    resolver: Callable[[str, int], list[str]] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )
    create_dns_timeout: float = 5.0
    # DNS lookups of webhook URL checks (create, PATCH url) running at once, per org and in all
    # (across workers and hosts): below the worker count, so a hung DNS server holds a few
    # workers at most (delivery/lookup_leases.py).
    dns_lookups_per_org: int = 1
    dns_lookups_total: int = 2
    metrics_port: int | None = None  # the dispatcher's /metrics; None = off, 0 = any free port
    metrics_host: str = "127.0.0.1"
    log_format: str = "text"  # text | json
    # prometheus_client reads this variable itself; it is validated here so a bad one stops
    # the start with one clear line instead of a failing scrape.
    prometheus_multiproc_dir: str | None = None

    @property
    def lease_seconds(self) -> float:
        """How long a claimed delivery stays invisible: longer than any attempt can last."""
        return self.delivery_timeout * 3 + 30

    @property
    def listen_url(self) -> str:
        """Where the dispatcher LISTENs for publishes (PostgreSQL): a session, not a pool."""
        return self.dispatcher_listen_url or self.database_url

    @classmethod
    def from_env(cls, environ=None, **overrides) -> Config:
        """Read and validate the environment; `overrides` (tests) win over it."""
        env = os.environ if environ is None else environ
        values = {}
        for name, (field, parse) in _VARIABLES.items():
            raw = env.get(name)
            if raw is not None and raw.strip() != "":
                try:
                    values[field] = parse(raw.strip())
                except (ValueError, TypeError) as exc:
                    # A URL may hold a password (a mistyped one too): never shown.
                    shown = describe_database_url(raw) if name.endswith("_URL") else raw
                    raise ConfigError(f"{name}: {exc} (got {shown!r})") from None
        values.update(overrides)
        return cls(**values)


def parse_allow_cidrs(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse PARTNER_API_WEBHOOK_ALLOW_CIDRS ('127.0.0.0/8, ::1/128'); '' gives ()."""
    networks = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if "%" in entry:
            raise ValueError(f"{entry!r} has a zone id; use a plain CIDR")
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as exc:
            raise ValueError(
                f"{entry!r} is not a valid network (expected e.g. 10.0.0.0/8 or fd00::/8): {exc}"
            ) from None
    return tuple(networks)


def _database_url(value: str) -> str:
    if not value.startswith(("sqlite:///", "postgres://", "postgresql://")):
        raise ValueError("must start with sqlite:///, postgres:// or postgresql://")
    if value.startswith("sqlite:///"):
        path = value[len("sqlite:///") :]
        if path in ("", ":memory:"):
            raise ValueError("must name a database file (an in-memory database is per process)")
        if set(path) & set("?#%"):
            # The migrations open the file as a `file:` URI, where these have a meaning.
            raise ValueError("a SQLite path may not contain ?, # or %")
        return value
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (reading it validates it)
    except ValueError:
        raise ValueError("is not a valid URL (check the host and port)") from None
    if not parts.hostname and not parts.path.strip("/"):
        raise ValueError("must name a server or a database")
    return value


_PASSWORD_PARAMETERS = {"password", "passwd", "sslpassword"}


def describe_database_url(url: str) -> str:
    """DATABASE_URL as the CLI shows it: a SQLite file by its absolute path, a server's password
    (in the user part or a query parameter) as ***, so the line is safe in any terminal or log.

    The user part ends at the URL's last `@`, so an unencoded `@`, `/` or `?` in a password
    hides more of the URL rather than showing part of the password. Text that is not a URL
    (a mistyped scheme, a libpq `key=value` string) shows nothing before its last `@` and no
    password parameter's value."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        return f"sqlite:///{os.path.abspath(path)}"
    scheme, separator, rest = url.partition("://")
    if not separator:
        _, at, location = url.rpartition("@")
        return _PASSWORD_SETTING.sub(r"\1***", f"***@{location}" if at else url)
    userinfo, at, location = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    location, question, query = location.partition("?")
    if question:
        query = "&".join(_masked_parameter(item) for item in query.split("&"))
    return f"{scheme}{separator}{userinfo}{at}{location}{question}{query}"


# `password=…` in a libpq connection string (quoted or not) or a URL's query.
_PASSWORD_SETTING = re.compile(
    r"\b((?:password|passwd|sslpassword)\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]*)", re.I
)


def _masked_parameter(item: str) -> str:
    name, equals, _ = item.partition("=")
    if equals and urllib.parse.unquote(name).lower() in _PASSWORD_PARAMETERS:
        return f"{name}=***"
    return item


def database_passwords(url: str) -> set[str]:
    """Each password a database URL holds (its user part's, its query's), as written and
    percent-decoded: what no message about the database may repeat."""
    if url.startswith("sqlite:///"):
        return set()
    userinfo, at, location = url.partition("://")[2].rpartition("@")
    found = {userinfo.partition(":")[2]} if at else set()
    for item in location.partition("?")[2].split("&"):
        name, equals, value = item.partition("=")
        if equals and urllib.parse.unquote(name).lower() in _PASSWORD_PARAMETERS:
            found.add(value)
    found |= {urllib.parse.unquote(value) for value in found}
    return {value for value in found if value}


def without_passwords(text: str, url: str) -> str:
    """`text` (a driver's error message, say) with any password of `url` replaced by ***."""
    for password in sorted(database_passwords(url), key=len, reverse=True):
        text = text.replace(password, "***")
    return text


def _listen_url(value: str) -> str:
    if not value.startswith(("postgres://", "postgresql://")):
        raise ValueError("must start with postgres:// or postgresql:// (LISTEN is PostgreSQL's)")
    return _database_url(value)


def _whole_number(low: int, high: int):
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return number

    return parse


def _positive_seconds(high: float):
    def parse(value: str) -> float:
        number = float(value)
        if not 0 < number <= high:  # also refuses nan
            raise ValueError(f"must be a number of seconds above 0 and at most {high:g}")
        return number

    return parse


def _schedule(value: str) -> tuple[int, ...]:
    parts = [part.strip() for part in value.split(",")]
    if any(not part.isdigit() or not 0 < int(part) <= MAX_RETRY_DELAY for part in parts):
        raise ValueError(
            f"must be comma-separated whole seconds from 1 to {MAX_RETRY_DELAY}, e.g. 60,300,1800"
        )
    if len(parts) > MAX_RETRIES:
        raise ValueError(f"must list at most {MAX_RETRIES} retries")
    return tuple(int(part) for part in parts)


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be true or false")


def _ca_bundle(value: str) -> str:
    try:
        ssl.create_default_context(cafile=value)
    except (OSError, ssl.SSLError):
        raise ValueError("must name a readable PEM file of CA certificates") from None
    return value


def _log_format(value: str) -> str:
    lowered = value.lower()
    if lowered not in LOG_FORMATS:
        raise ValueError("must be one of " + ", ".join(LOG_FORMATS))
    return lowered


def _host(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IP address to listen on, e.g. 127.0.0.1 or 0.0.0.0") from None


def _directory(value: str) -> str:
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ValueError("must name a directory")
    return value


LOG_FORMATS = ("text", "json")
MAX_RETRY_DELAY = 30 * 86400
MAX_RETRIES = 20
MAX_RETENTION_DAYS = 3650
_VARIABLES = {
    "DATABASE_URL": ("database_url", _database_url),
    "PARTNER_API_RETRY_SCHEDULE": ("retry_schedule", _schedule),
    "PARTNER_API_DELIVERY_TIMEOUT": ("delivery_timeout", _positive_seconds(300)),
    "PARTNER_API_POLL_INTERVAL": ("poll_interval", _positive_seconds(3600)),
    "PARTNER_API_AUTO_DISABLE_AFTER": ("auto_disable_after", _whole_number(1, 1_000_000)),
    "PARTNER_API_AUTO_DISABLE_MIN_SECONDS": (
        "auto_disable_min_seconds",
        _whole_number(0, MAX_RETRY_DELAY),
    ),
    "PARTNER_API_WEBHOOK_ALLOW_CIDRS": ("webhook_allow_cidrs", parse_allow_cidrs),
    "PARTNER_API_ALLOW_HTTP_WEBHOOKS": ("allow_http_webhooks", _boolean),
    "PARTNER_API_CA_BUNDLE": ("ca_bundle", _ca_bundle),
    "PARTNER_API_DEFAULT_RATE_LIMIT": ("default_rate_limit", _whole_number(1, 1_000_000)),
    "PARTNER_API_MAX_SUBSCRIPTIONS_PER_ORG": (
        "max_subscriptions_per_org",
        _whole_number(1, 10_000),
    ),
    "PARTNER_API_DNS_LOOKUPS_PER_ORG": ("dns_lookups_per_org", _whole_number(1, 1_000)),
    "PARTNER_API_DNS_LOOKUPS_TOTAL": ("dns_lookups_total", _whole_number(1, 10_000)),
    "PARTNER_API_DISPATCH_BATCH_SIZE": ("dispatch_batch_size", _whole_number(1, 1_000)),
    "PARTNER_API_DISPATCH_WORKERS": ("dispatch_workers", _whole_number(1, 200)),
    "PARTNER_API_METRICS_PORT": ("metrics_port", _whole_number(0, 65535)),
    "PARTNER_API_METRICS_HOST": ("metrics_host", _host),
    "PARTNER_API_LOG_FORMAT": ("log_format", _log_format),
    "PROMETHEUS_MULTIPROC_DIR": ("prometheus_multiproc_dir", _directory),
    "PARTNER_API_RETENTION_DAYS": ("retention_days", _whole_number(1, MAX_RETENTION_DAYS)),
    "PARTNER_API_DISPATCHER_WAKE": ("dispatcher_wake", _boolean),
    "PARTNER_API_DISPATCHER_LISTEN_URL": ("dispatcher_listen_url", _listen_url),
}
