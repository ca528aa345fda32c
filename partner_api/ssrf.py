"""SSRF policy for webhook targets: which URLs may be registered and which addresses we may reach.

Shared by the web app (create-time check) and the dispatcher (check on every new connection).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

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

# Special-purpose IPv4 space (RFC 6890 and friends). Anything here is never a partner's
# public endpoint, so it is refused unless an operator allow-lists it.
DENIED_IPV4_NETWORKS: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/8", "'this' network"),
        ("10.0.0.0/8", "private network"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local / cloud metadata"),
        ("172.16.0.0/12", "private network"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation (TEST-NET-1)"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private network"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation (TEST-NET-2)"),
        ("203.0.113.0/24", "documentation (TEST-NET-3)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved / broadcast"),
    )
)

# IPv6 is an allow-list: only global unicast is reachable. That one rule already refuses
# ::1, ::, IPv4-mapped/compatible, NAT64, ULA, link-local, site-local and multicast.
GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")

# Carve-outs inside 2000::/3 that tunnel to or stand for somewhere else.
DENIED_IPV6_NETWORKS: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(cidr), reason)
    for cidr, reason in (
        ("2001::/23", "IETF protocol assignments (incl. Teredo)"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4"),
        ("3fff::/20", "documentation"),
    )
)

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_PORT_RE = re.compile(r"[0-9]+")
_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# A host whose last label is a number is an IPv4 literal to the C resolver and to browsers
# (WHATWG URL), so it must parse as one; it never falls through to DNS.
_NUMBER_LABEL_RE = re.compile(r"0x[0-9a-f]*|[0-9]+")


class WebhookUrlError(ValueError):
    """A refused webhook URL: `.code` is a stable machine code, `.message` a human sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (type(self), (self.code, self.message))


def call_with_deadline(seconds: float, func, *args):
    """`func(*args)`, or TimeoutError once `seconds` pass. getaddrinfo cannot be interrupted,
    so it runs in a daemon thread that is left to finish on its own (and never blocks exit)."""
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["result"] = func(*args)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="dns-lookup", daemon=True)
    worker.start()
    worker.join(max(seconds, 0.0))
    if worker.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def resolver_with_deadline(resolver: Resolver, seconds: float) -> Resolver:
    """`resolver`, but a lookup still running after `seconds` fails as unresolvable, so a slow
    DNS server cannot hold a web worker."""
    return lambda host, port: call_with_deadline(seconds, resolver, host, port)


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with getaddrinfo (TCP); unique addresses in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in infos))


@dataclass(frozen=True)
class SsrfPolicy:
    """What the operator allows: plain http (dev only), extra reachable networks, the resolver."""

    allow_http: bool = False
    allow_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = system_resolver

    def __post_init__(self) -> None:
        # Accept a list or CIDR strings from callers, but store a hashable tuple of networks.
        networks = tuple(
            ipaddress.ip_network(net) if isinstance(net, str) else net
            for net in self.allow_networks
        )
        object.__setattr__(self, "allow_networks", networks)


@dataclass(frozen=True)
class WebhookUrl:
    """A syntactically valid webhook URL, normalised to what will actually be requested."""

    url: str
    scheme: str
    host: str
    port: int
    ip_literal: IPAddress | None = None


def parse_allow_cidrs(value: str) -> tuple[IPNetwork, ...]:
    """Parse PARTNER_API_WEBHOOK_ALLOW_CIDRS ('127.0.0.0/8, ::1/128'); '' gives ()."""
    networks = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if "%" in entry:
            raise ValueError(
                f"PARTNER_API_WEBHOOK_ALLOW_CIDRS: {entry!r} has a zone id; use a plain CIDR."
            )
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as exc:
            raise ValueError(
                f"PARTNER_API_WEBHOOK_ALLOW_CIDRS: {entry!r} is not a valid network "
                f"(expected e.g. 10.0.0.0/8 or fd00::/8): {exc}"
            ) from None
    return tuple(networks)


def is_address_allowed(
    address: IPAddress | str, allow_networks: tuple[IPNetwork, ...] = ()
) -> bool:
    """True if the policy lets us connect to `address`."""
    return _refusal_reason(_as_address(address), allow_networks) is None


def parse_webhook_url(url: str, policy: SsrfPolicy) -> WebhookUrl:
    """Check the URL's syntax and normalise it; no DNS."""
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

    match = _SCHEME_RE.match(url)
    if not match:
        raise _invalid("Webhook URL must be absolute and start with https://.")
    scheme = match.group()[:-1].lower()
    allowed_schemes = ("https", "http") if policy.allow_http else ("https",)
    if scheme not in allowed_schemes:
        wanted = "https:// or http://" if policy.allow_http else "https://"
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

    typed_host, bracketed, port_text = _split_authority(authority)
    if port_text is None:
        explicit_port = None
    elif _PORT_RE.fullmatch(port_text) and 1 <= int(port_text) <= 65535:
        explicit_port = int(port_text)
    else:
        raise _invalid("Webhook URL port must be a number from 1 to 65535.")

    if bracketed:
        try:
            ip_literal: IPAddress | None = ipaddress.IPv6Address(typed_host)
        except ValueError:
            raise _invalid("Webhook URL has an invalid IPv6 address in [...].") from None
        ascii_host = typed_host.lower()
    else:
        ascii_host = _to_ascii_host(typed_host)
        ip_literal = _host_ip_literal(ascii_host)
        if ip_literal is None and not _is_valid_hostname(_strip_root_dot(ascii_host)):
            raise _invalid("Webhook URL host is not a valid host name.")

    host = str(ip_literal) if ip_literal is not None else _strip_root_dot(ascii_host)
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


def resolve_allowed_addresses(host: str, port: int, policy: SsrfPolicy) -> list[IPAddress]:
    """Resolve `host` (or take it as an IP literal) and check every address.

    Returns the checked addresses in resolver order; connect only to one of these.
    """
    name = host.lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    name = _strip_root_dot(name)
    try:
        literal = _host_ip_literal(name)
    except WebhookUrlError:
        raise _unresolvable(host) from None
    if literal is not None:
        literal = _as_address(literal)
        _require_allowed(literal, policy)
        return [literal]
    if not _is_valid_hostname(name):
        raise _unresolvable(host)

    try:
        answers = policy.resolver(name, port)
    except (OSError, UnicodeError) as exc:
        raise _unresolvable(host) from exc
    if not answers:
        raise _unresolvable(host)
    addresses = []
    for answer in answers:
        try:
            addresses.append(_as_address(answer))
        except (TypeError, ValueError):
            raise _unresolvable(host) from None
    # All of them, not just the first: the OS may pick any, and a name mixing public and
    # private records is exactly what a rebinding attacker would publish.
    for address in addresses:
        _require_allowed(address, policy, name)
    return addresses


def validate_webhook_url(url: str, policy: SsrfPolicy) -> WebhookUrl:
    """The create-time check: parse_webhook_url, then resolve_allowed_addresses."""
    webhook_url = parse_webhook_url(url, policy)
    resolve_allowed_addresses(webhook_url.host, webhook_url.port, policy)
    return webhook_url


def _refusal_reason(address: IPAddress, allow_networks: tuple[IPNetwork, ...]) -> str | None:
    if _in_any(address, allow_networks):
        return None
    if address.version == 4:
        for network, reason in DENIED_IPV4_NETWORKS:
            if address in network:
                return reason
        return None
    # So an allow-listed 127.0.0.0/8 also covers the dual-stack spelling ::ffff:127.0.0.1.
    mapped = address.ipv4_mapped
    if mapped is not None:
        return None if _in_any(mapped, allow_networks) else f"IPv4-mapped form of {mapped}"
    if address not in GLOBAL_UNICAST_IPV6:
        return "IPv6 outside global unicast 2000::/3"
    for network, reason in DENIED_IPV6_NETWORKS:
        if address in network:
            return reason
    return None


def _in_any(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(net.version == address.version and address in net for net in networks)


def _as_address(value: IPAddress | str) -> IPAddress:
    if isinstance(value, str):
        value = ipaddress.ip_address(value.partition("%")[0])
    if not isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise TypeError(f"not an IP address: {type(value).__name__}")
    # A zone only says which interface; the address is checked (and refused) without it.
    if value.version == 6 and value.scope_id:
        value = ipaddress.IPv6Address(int(value))
    return value


def _require_allowed(address: IPAddress, policy: SsrfPolicy, host: str | None = None) -> None:
    reason = _refusal_reason(address, policy.allow_networks)
    if reason is None:
        return
    where = f"host {host} resolves to {address}, which" if host else f"address {address}"
    raise WebhookUrlError(
        "address_not_allowed", f"Webhook {where} is not an allowed destination ({reason})."
    )


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


def _host_ip_literal(host: str) -> IPAddress | None:
    """The address if `host` is an IP literal in any spelling the C resolver accepts."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise _invalid("Webhook URL has an invalid IPv6 address.") from None
    labels = _strip_root_dot(host).split(".")
    if not _NUMBER_LABEL_RE.fullmatch(labels[-1]):
        return None
    # inet_aton, not ipaddress: it is what getaddrinfo uses, so 0x7f.1 and 2130706433 count.
    if all(_NUMBER_LABEL_RE.fullmatch(label) for label in labels):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(".".join(labels)))
        except OSError:
            pass
    raise _invalid("Webhook URL host looks like an IPv4 address but is not a valid one.")


def _is_valid_hostname(name: str) -> bool:
    return 0 < len(name) <= 253 and all(_LABEL_RE.fullmatch(label) for label in name.split("."))


def _strip_root_dot(name: str) -> str:
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


def _unresolvable(host: str) -> WebhookUrlError:
    return WebhookUrlError("host_unresolvable", f"Webhook host {host} could not be resolved.")
