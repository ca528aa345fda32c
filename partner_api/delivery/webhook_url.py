"""Webhook URL grammar: what a subscription URL may look like, normalised to what is requested.

Pure text rules (no DNS); `ssrf.py` decides which addresses the host may reach.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from dataclasses import dataclass

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from partner_api.errors import DomainError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"https": 443, "http": 80}
ERROR_CODES = frozenset(
    {
        "invalid_url",
        "url_too_long",
        "url_scheme_not_allowed",
        "url_credentials_not_allowed",
        "host_unresolvable",
        "address_not_allowed",
    }
)

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_PORT_RE = re.compile(r"[0-9]+")
_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# A host whose last label is a number is an IPv4 literal to the C resolver and to browsers
# (WHATWG URL), so it must parse as one; it never falls through to DNS.
_NUMBER_LABEL_RE = re.compile(r"0x[0-9a-f]*|[0-9]+")


class WebhookUrlError(DomainError):
    """A refused webhook URL or destination; `.code` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, field="url")


@dataclass(frozen=True)
class WebhookUrl:
    """A syntactically valid webhook URL, normalised to what will actually be requested."""

    url: str
    scheme: str
    host: str
    port: int
    ip_literal: IPAddress | None = None


def parse_webhook_url(url: str, policy) -> WebhookUrl:
    """Check the URL's syntax against `policy` (its `allow_http`) and normalise it; no DNS."""
    _check_characters(url)
    scheme, authority, target = _split_url(url, policy.allow_http)
    typed_host, bracketed, port_text = _split_authority(authority)
    explicit_port = _parse_port(port_text)
    ascii_host, ip_literal = _parse_host(typed_host, bracketed)

    host = str(ip_literal) if ip_literal is not None else strip_root_dot(ascii_host)
    port = explicit_port if explicit_port is not None else DEFAULT_PORTS[scheme]
    url_host = f"[{host}]" if ip_literal is not None and ip_literal.version == 6 else host
    netloc = url_host if port == DEFAULT_PORTS[scheme] else f"{url_host}:{port}"
    normalised = f"{scheme}://{netloc}{target if target.startswith('/') else '/' + target}"
    if len(normalised) > MAX_URL_LENGTH:
        raise _too_long()

    # The sender parses URLs with urllib3: it must see, in both the URL as typed and the one
    # we store, exactly the host we checked, or a parser differential could slip past us.
    typed_url_host = f"[{ascii_host}]" if bracketed else ascii_host
    _require_urllib3_agrees(url, scheme, typed_url_host, explicit_port)
    _require_urllib3_agrees(
        normalised, scheme, url_host, None if port == DEFAULT_PORTS[scheme] else port
    )
    return WebhookUrl(url=normalised, scheme=scheme, host=host, port=port, ip_literal=ip_literal)


def _check_characters(url) -> None:
    if not isinstance(url, str) or not url:
        raise _invalid("Webhook URL must be a non-empty string.")
    if len(url) > MAX_URL_LENGTH:
        raise _too_long()
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in url):
        raise _invalid("Webhook URL must not contain whitespace or control characters.")
    # Browsers and some parsers read '\' as '/', others as data: a classic parser-split trick.
    if "\\" in url:
        raise _invalid("Webhook URL must not contain a backslash.")
    if "#" in url:
        raise _invalid("Webhook URL must not contain a fragment ('#').")


def _split_url(url: str, allow_http: bool) -> tuple[str, str, str]:
    """(scheme, authority, path-and-query) of an absolute URL with an allowed scheme."""
    match = _SCHEME_RE.match(url)
    if not match:
        raise _invalid("Webhook URL must be absolute and start with https://.")
    scheme = match.group()[:-1].lower()
    if scheme not in (("https", "http") if allow_http else ("https",)):
        wanted = "https:// or http://" if allow_http else "https://"
        raise WebhookUrlError("url_scheme_not_allowed", f"Webhook URL must start with {wanted}.")
    rest = url[match.end() :]
    if not rest.startswith("//"):
        raise _invalid(f"Webhook URL must start with {scheme}:// followed by a host.")
    rest = rest[2:]
    split_at = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:split_at], rest[split_at:]
    if "@" in authority:
        raise WebhookUrlError(
            "url_credentials_not_allowed",
            "Webhook URL must not contain credentials (user@ or user:password@).",
        )
    # Covers percent-encoded hosts (decoded differently by different layers) and IPv6 zone ids.
    if "%" in authority:
        raise _invalid("Webhook URL host must not contain '%' (percent-encoding or zone id).")
    return scheme, authority, target


def _parse_port(port_text: str | None) -> int | None:
    if port_text is None:
        return None
    if _PORT_RE.fullmatch(port_text) and 1 <= int(port_text) <= 65535:
        return int(port_text)
    raise _invalid("Webhook URL port must be a number from 1 to 65535.")


def _parse_host(typed_host: str, bracketed: bool) -> tuple[str, IPAddress | None]:
    """(lower-case ASCII host as typed, its address if it is an IP literal)."""
    if bracketed:
        try:
            return typed_host.lower(), ipaddress.IPv6Address(typed_host)
        except ValueError:
            raise _invalid("Webhook URL has an invalid IPv6 address in [...].") from None
    ascii_host = _to_ascii_host(typed_host)
    ip_literal = host_ip_literal(ascii_host)
    if ip_literal is None and not is_valid_hostname(strip_root_dot(ascii_host)):
        raise _invalid("Webhook URL host is not a valid host name.")
    return ascii_host, ip_literal


def _split_authority(authority: str) -> tuple[str, bool, str | None]:
    """(host, is_bracketed, port text or None)."""
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise _invalid("Webhook URL has an unterminated '[' in the host.")
        host, after = authority[1:close], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise _invalid("Webhook URL has unexpected characters after ']'.")
        return host, True, after[1:] if after else None
    host, colon, port_text = authority.partition(":")
    if ":" in port_text:
        raise _invalid(
            "Webhook URL IPv6 addresses must be written in brackets, like [2001:db8::1]."
        )
    if not host:
        raise _invalid("Webhook URL must include a host.")
    return host, False, port_text if colon else None


def _to_ascii_host(host: str) -> str:
    if host.isascii():
        return host.lower()
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _invalid("Webhook URL host is not a valid internationalised domain name.") from None


def host_ip_literal(host: str) -> IPAddress | None:
    """The address if `host` is an IP literal in any spelling the C resolver accepts."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise _invalid("Webhook URL has an invalid IPv6 address.") from None
    labels = strip_root_dot(host).split(".")
    if not _NUMBER_LABEL_RE.fullmatch(labels[-1]):
        return None
    # inet_aton, not ipaddress: it is what getaddrinfo uses, so 0x7f.1 and 2130706433 count.
    if all(_NUMBER_LABEL_RE.fullmatch(label) for label in labels):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(".".join(labels)))
        except OSError:
            pass
    raise _invalid("Webhook URL host looks like an IPv4 address but is not a valid one.")


def is_valid_hostname(name: str) -> bool:
    return 0 < len(name) <= 253 and all(_LABEL_RE.fullmatch(label) for label in name.split("."))


def strip_root_dot(name: str) -> str:
    return name[:-1] if name.endswith(".") else name


def _require_urllib3_agrees(url: str, scheme: str, host: str, port: int | None) -> None:
    try:
        parsed = parse_url(url)
    except LocationParseError:
        parsed = None
    if (
        parsed is None
        or (parsed.scheme or "").lower() != scheme
        or parsed.auth is not None
        or (parsed.host or "").lower() != host
        or parsed.port != port
    ):
        raise _invalid("Webhook URL is ambiguous: URL parsers disagree about its host.")


def _invalid(message: str) -> WebhookUrlError:
    return WebhookUrlError("invalid_url", message)


def _too_long() -> WebhookUrlError:
    return WebhookUrlError(
        "url_too_long", f"Webhook URL must be at most {MAX_URL_LENGTH} characters long."
    )


def unresolvable(host: str) -> WebhookUrlError:
    return WebhookUrlError("host_unresolvable", f"Webhook host {host} could not be resolved.")
