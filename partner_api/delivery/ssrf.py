"""SSRF policy for webhook targets: which addresses a webhook may reach (the deny table) and
the checked resolution that both the create-time check and the dispatcher's connections use.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from partner_api.delivery.dns import Resolver, resolver_with_deadline, system_resolver
from partner_api.delivery.webhook_url import (
    IPAddress,
    WebhookUrl,
    WebhookUrlError,
    host_ip_literal,
    is_valid_hostname,
    parse_webhook_url,
    strip_root_dot,
    unresolvable,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
log = logging.getLogger(__name__)

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


def resolve_allowed_addresses(host: str, port: int, policy: SsrfPolicy) -> list[IPAddress]:
    """Resolve `host` (or take it as an IP literal) and check every address.

    Returns the checked addresses in resolver order; connect only to one of these.
    """
    name = host.lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    name = strip_root_dot(name)
    try:
        literal = host_ip_literal(name)
    except WebhookUrlError:
        raise unresolvable(host) from None
    if literal is not None:
        literal = _as_address(literal)
        _require_allowed(literal, policy)
        return [literal]
    if not is_valid_hostname(name):
        raise unresolvable(host)

    try:
        answers = policy.resolver(name, port)
    except (OSError, UnicodeError) as exc:
        raise unresolvable(host) from exc
    if not answers:
        raise unresolvable(host)
    addresses = []
    for answer in answers:
        try:
            addresses.append(_as_address(answer))
        except (TypeError, ValueError):
            raise unresolvable(host) from None
    # All of them, not just the first: the OS may pick any, and a name mixing public and
    # private records is exactly what a rebinding attacker would publish.
    for address in addresses:
        _require_allowed(address, policy, name)
    return addresses


def policy_for(config, dns_deadline: float | None = None) -> SsrfPolicy:
    """The SSRF policy a `Config` describes; with `dns_deadline`, a lookup slower than that
    many seconds fails as unresolvable (a create must answer promptly)."""
    resolver = config.resolver or system_resolver
    if dns_deadline is not None:
        resolver = resolver_with_deadline(resolver, dns_deadline)
    return SsrfPolicy(
        allow_http=config.allow_http_webhooks,
        allow_networks=config.webhook_allow_cidrs,
        resolver=resolver,
    )


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
    """Refuse a disallowed address. For a name, the message must not say what it resolves
    to (or what kind of network that is): the caller would get an oracle into internal DNS.
    The address goes to the server log instead; an IP literal the caller typed is echoed."""
    reason = _refusal_reason(address, policy.allow_networks)
    if reason is None:
        return
    if host is None:
        message = f"Webhook address {address} is not an allowed destination ({reason})."
    else:
        log.warning("refused webhook host %s: resolves to %s (%s)", host, address, reason)
        message = f"Webhook host {host} resolves to an address that is not allowed."
    raise WebhookUrlError("address_not_allowed", message)
