"""Specification of the webhook SSRF policy (delivery/ssrf.py); no test touches real DNS."""

import ipaddress
import logging
import pickle
import socket
import threading

import pytest

from harness.dns import FakeResolver
from partner_api.config import Config, parse_allow_cidrs
from partner_api.delivery import dns, ssrf, webhook_url
from partner_api.delivery.dns import system_resolver
from partner_api.delivery.ssrf import (
    SsrfPolicy,
    policy_for,
    resolve_allowed_addresses,
    validate_webhook_url,
)
from partner_api.delivery.webhook_url import WebhookUrl, WebhookUrlError, parse_webhook_url
from partner_api.errors import DomainError

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


def is_address_allowed(address, allow_networks=()) -> bool:
    """Whether a webhook may reach `address`, asked through the public check of an IP
    literal (the resolver must not be consulted)."""
    policy = SsrfPolicy(allow_networks=allow_networks, resolver=must_not_resolve)
    try:
        resolve_allowed_addresses(str(address), 443, policy)
    except WebhookUrlError as exc:
        assert exc.code == "address_not_allowed", exc.code
        return False
    return True


def must_not_resolve(host, port):
    pytest.fail(f"resolver called for {host!r}:{port} but the host is an IP literal")


@pytest.fixture(autouse=True)
def no_real_dns(monkeypatch):
    """Safety net: any getaddrinfo call may only parse numeric hosts, never query DNS."""
    real_getaddrinfo = socket.getaddrinfo

    def numeric_only(host, port, family=0, type=0, proto=0, flags=0):
        return real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", numeric_only)


def policy(records=None, **kwargs):
    return SsrfPolicy(resolver=FakeResolver(records), **kwargs)


def literal_policy(**kwargs):
    return SsrfPolicy(resolver=must_not_resolve, **kwargs)


def url_for(address):
    return f"https://[{address}]/" if ":" in address else f"https://{address}/"


def refused(url, pol, code):
    with pytest.raises(WebhookUrlError) as info:
        validate_webhook_url(url, pol)
    assert info.value.code == code, str(info.value)
    return info.value


# --- address policy ------------------------------------------------------------------------------

DENIED_ADDRESSES = [
    pytest.param("0.1.2.3", id="v4-0.0.0.0/8-this-network"),
    pytest.param("10.20.30.40", id="v4-10.0.0.0/8-private"),
    pytest.param("100.64.0.1", id="v4-100.64.0.0/10-cgnat"),
    pytest.param("127.0.0.1", id="v4-127.0.0.0/8-loopback"),
    pytest.param("169.254.169.254", id="v4-169.254.0.0/16-metadata"),
    pytest.param("172.16.5.4", id="v4-172.16.0.0/12-private"),
    pytest.param("192.0.0.170", id="v4-192.0.0.0/24-ietf"),
    pytest.param("192.0.2.10", id="v4-192.0.2.0/24-test-net-1"),
    pytest.param("192.88.99.1", id="v4-192.88.99.0/24-6to4-relay"),
    pytest.param("192.168.1.1", id="v4-192.168.0.0/16-private"),
    pytest.param("198.19.0.1", id="v4-198.18.0.0/15-benchmark"),
    pytest.param("198.51.100.7", id="v4-198.51.100.0/24-test-net-2"),
    pytest.param("203.0.113.9", id="v4-203.0.113.0/24-test-net-3"),
    pytest.param("239.255.255.250", id="v4-224.0.0.0/4-multicast"),
    pytest.param("250.1.2.3", id="v4-240.0.0.0/4-reserved"),
    pytest.param("255.255.255.255", id="v4-255.255.255.255-broadcast"),
    pytest.param("::1", id="v6-loopback"),
    pytest.param("::", id="v6-unspecified"),
    pytest.param("::ffff:127.0.0.1", id="v6-ipv4-mapped-loopback"),
    pytest.param("::ffff:8.8.8.8", id="v6-ipv4-mapped-public"),
    pytest.param("::8.8.8.8", id="v6-ipv4-compatible"),
    pytest.param("64:ff9b::a9fe:a9fe", id="v6-64:ff9b::/96-nat64"),
    pytest.param("64:ff9b:1::1", id="v6-64:ff9b:1::/48-local-nat64"),
    pytest.param("100::1", id="v6-100::/64-discard"),
    pytest.param("fc00::1", id="v6-fc00::/7-ula-fc"),
    pytest.param("fd12:3456::1", id="v6-fc00::/7-ula-fd"),
    pytest.param("fe80::1", id="v6-fe80::/10-link-local"),
    pytest.param("fec0::1", id="v6-fec0::/10-site-local"),
    pytest.param("ff02::1", id="v6-ff00::/8-multicast"),
    pytest.param("2001::1", id="v6-2001::/23-teredo"),
    pytest.param("2001:1ff:ffff::1", id="v6-2001::/23-end"),
    pytest.param("2001:db8::1", id="v6-2001:db8::/32-documentation"),
    pytest.param("2002:7f00:1::1", id="v6-2002::/16-6to4"),
    pytest.param("3fff::1", id="v6-3fff::/20-documentation"),
    pytest.param("1fff:ffff::1", id="v6-below-2000::/3"),
    pytest.param("4000::1", id="v6-above-2000::/3"),
]

ALLOWED_ADDRESSES = [
    pytest.param(PUBLIC_V4, id="example.com-v4"),
    pytest.param("1.1.1.1", id="1.1.1.1"),
    pytest.param("8.8.8.8", id="8.8.8.8"),
    pytest.param(PUBLIC_V6, id="example.com-v6"),
    pytest.param("2001:4860:4860::8888", id="google-dns-v6"),
    pytest.param("1.0.0.0", id="just-above-0.0.0.0/8"),
    pytest.param("9.255.255.255", id="just-below-10/8"),
    pytest.param("11.0.0.0", id="just-above-10/8"),
    pytest.param("100.63.255.255", id="just-below-100.64/10"),
    pytest.param("100.128.0.0", id="just-above-100.64/10"),
    pytest.param("126.255.255.255", id="just-below-127/8"),
    pytest.param("128.0.0.0", id="just-above-127/8"),
    pytest.param("169.253.255.255", id="just-below-169.254/16"),
    pytest.param("169.255.0.0", id="just-above-169.254/16"),
    pytest.param("172.15.255.255", id="just-below-172.16/12"),
    pytest.param("172.32.0.0", id="just-above-172.16/12"),
    pytest.param("192.0.1.0", id="between-192.0.0/24-and-192.0.2/24"),
    pytest.param("192.0.3.0", id="just-above-192.0.2/24"),
    pytest.param("192.167.255.255", id="just-below-192.168/16"),
    pytest.param("192.169.0.0", id="just-above-192.168/16"),
    pytest.param("198.17.255.255", id="just-below-198.18/15"),
    pytest.param("198.20.0.0", id="just-above-198.18/15"),
    pytest.param("203.0.114.0", id="just-above-203.0.113/24"),
    pytest.param("223.255.255.255", id="just-below-224/4"),
    pytest.param("2000::1", id="start-of-2000::/3"),
    pytest.param("2001:200::1", id="just-above-2001::/23"),
    pytest.param("2001:db9::1", id="just-above-2001:db8::/32"),
    pytest.param("2003::1", id="just-above-2002::/16"),
    pytest.param("3fff:1000::1", id="just-above-3fff::/20"),
]

DENIED_CIDRS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "3fff::/20",
]


@pytest.mark.parametrize("address", DENIED_ADDRESSES)
def test_special_purpose_address_is_refused(address):
    assert is_address_allowed(address) is False
    assert is_address_allowed(ipaddress.ip_address(address)) is False
    refused(url_for(address), literal_policy(), "address_not_allowed")


@pytest.mark.parametrize("cidr", DENIED_CIDRS)
def test_first_and_last_address_of_every_denied_range_is_refused(cidr):
    network = ipaddress.ip_network(cidr)
    assert not is_address_allowed(network.network_address)
    assert not is_address_allowed(network.broadcast_address)


@pytest.mark.parametrize("address", ALLOWED_ADDRESSES)
def test_public_address_is_allowed(address):
    assert is_address_allowed(address) is True
    result = validate_webhook_url(url_for(address), literal_policy())
    assert result.ip_literal == ipaddress.ip_address(address)


def test_address_with_zone_is_checked_without_it():
    assert is_address_allowed("fe80::1%eth0") is False
    assert is_address_allowed(f"{PUBLIC_V6}%eth0") is True


# --- IP literals in every spelling ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("2130706433", "127.0.0.1", id="decimal"),
        pytest.param("0x7f000001", "127.0.0.1", id="hex"),
        pytest.param("0X7F000001", "127.0.0.1", id="hex-uppercase"),
        pytest.param("0177.0.0.1", "127.0.0.1", id="octal-part"),
        pytest.param("127.1", "127.0.0.1", id="short-form"),
        pytest.param("0x7f.1", "127.0.0.1", id="hex-short-form"),
        pytest.param("127.0.0.1.", "127.0.0.1", id="trailing-dot"),
        pytest.param("[::ffff:127.0.0.1]", "::ffff:127.0.0.1", id="ipv4-mapped"),
        pytest.param("[::1]", "::1", id="ipv6-loopback"),
        pytest.param("[::]", "::", id="ipv6-unspecified"),
        pytest.param("[0:0:0:0:0:0:0:1]", "::1", id="ipv6-loopback-long"),
        pytest.param("0.0.0.0", "0.0.0.0", id="zero-dotted"),
        pytest.param("0", "0.0.0.0", id="zero"),
        pytest.param("0251.0376.0251.0376", "169.254.169.254", id="octal-metadata"),
        pytest.param("10.1", "10.0.0.1", id="short-private"),
    ],
)
def test_ip_literal_in_any_spelling_is_checked_without_resolving(host, expected):
    url = f"https://{host}/hook"
    parsed = parse_webhook_url(url, literal_policy())
    assert parsed.ip_literal == ipaddress.ip_address(expected)
    refused(url, literal_policy(), "address_not_allowed")


def test_ip_literal_is_normalised_to_its_canonical_form():
    pol = literal_policy(allow_networks=parse_allow_cidrs("127.0.0.0/8"))
    parsed = validate_webhook_url("https://0x7f.1:8443/hook?x=1", pol)
    assert parsed == WebhookUrl(
        url="https://127.0.0.1:8443/hook?x=1",
        scheme="https",
        host="127.0.0.1",
        port=8443,
        ip_literal=ipaddress.IPv4Address("127.0.0.1"),
    )


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("256.0.0.1", id="octet-too-big"),
        pytest.param("1.2.3.4.5", id="five-parts"),
        pytest.param("08.0.0.1", id="bad-octal"),
        pytest.param("4294967296", id="decimal-too-big"),
        pytest.param("0x", id="bare-0x"),
        pytest.param("0x7g.1", id="bad-hex-digit-last-label-numeric"),
        pytest.param("example.123", id="numeric-tld"),
        pytest.param("example.0x1", id="hex-tld"),
        pytest.param("１２７.０.０.１", id="fullwidth-digits"),
    ],
)
def test_numeric_looking_host_that_is_not_an_ipv4_address_is_invalid(host):
    refused(f"https://{host}/", literal_policy(), "invalid_url")


# --- URL syntax ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://good@evil/", id="user"),
        pytest.param("https://user:pw@example.com/", id="user-password"),
        pytest.param("https://:pw@example.com/", id="password-only"),
        pytest.param("https://@example.com/", id="empty-userinfo"),
        pytest.param("https://us%40er@example.com/", id="encoded-userinfo"),
    ],
)
def test_userinfo_is_refused(url):
    refused(url, policy(), "url_credentials_not_allowed")


def test_error_message_never_echoes_credentials_or_query():
    error = refused("https://admin:s3cret@example.com/", policy(), "url_credentials_not_allowed")
    assert "s3cret" not in str(error) and "admin" not in str(error)
    error = refused("https://10.0.0.1/?token=s3cret", literal_policy(), "address_not_allowed")
    assert "s3cret" not in str(error)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("gopher://example.com/", id="gopher"),
        pytest.param("ftp://example.com/", id="ftp"),
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("data:text/plain,hi", id="data"),
        pytest.param("ws://example.com/", id="websocket"),
        pytest.param("http://example.com/", id="http-without-allow-http"),
    ],
)
def test_scheme_other_than_https_is_refused(url):
    refused(url, policy({"example.com": [PUBLIC_V4]}), "url_scheme_not_allowed")


def test_http_is_allowed_when_policy_allows_it():
    pol = policy({"example.com": [PUBLIC_V4]}, allow_http=True)
    parsed = validate_webhook_url("http://example.com/", pol)
    assert (parsed.scheme, parsed.port, parsed.url) == ("http", 80, "http://example.com/")
    refused("ftp://example.com/", pol, "url_scheme_not_allowed")


def test_uppercase_scheme_and_host_are_normalised_but_path_and_query_are_kept():
    pol = policy({"example.com": [PUBLIC_V4]})
    parsed = validate_webhook_url("HTTPS://Example.COM:443/Hooks/a%2Fb?Sig=%41%20x&y=", pol)
    assert parsed == WebhookUrl(
        url="https://example.com/Hooks/a%2Fb?Sig=%41%20x&y=",
        scheme="https",
        host="example.com",
        port=443,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://example.com", "https://example.com/", id="no-path"),
        pytest.param("https://example.com?x=1", "https://example.com/?x=1", id="query-no-path"),
        pytest.param("https://example.com:8443", "https://example.com:8443/", id="custom-port"),
        pytest.param("https://example.com:00443/", "https://example.com/", id="padded-port"),
    ],
)
def test_url_is_normalised(url, expected):
    assert parse_webhook_url(url, policy()).url == expected


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("example.com/path", id="no-scheme"),
        pytest.param("//example.com/path", id="scheme-relative"),
        pytest.param("/relative/path", id="relative-path"),
        pytest.param("https:example.com/", id="no-slashes"),
        pytest.param("https:/example.com/", id="one-slash"),
        pytest.param("https:///path", id="empty-host"),
        pytest.param("https://:443/", id="port-without-host"),
        pytest.param("https://evil.com\\@good.com/", id="backslash-in-authority"),
        pytest.param("https://example.com/a\\b", id="backslash-in-path"),
        pytest.param("https://example.com/#frag", id="fragment"),
        pytest.param("https://example.com/#", id="empty-fragment"),
        pytest.param("https://exa mple.com/", id="space-in-host"),
        pytest.param("https://example.com/a b", id="space-in-path"),
        pytest.param(" https://example.com/", id="leading-space"),
        pytest.param("https://example.com/\t", id="tab"),
        pytest.param("https://example.com/\nHost: evil", id="newline"),
        pytest.param("https://example.com\r/", id="carriage-return"),
        pytest.param("https://example.com\x00.evil.com/", id="nul"),
        pytest.param("https://example.com/\x7f", id="del"),
        pytest.param("https://example.com/\u00a0", id="no-break-space"),
        pytest.param("https://example.com/\u2028", id="line-separator"),
        pytest.param("https://exa\u200bmple.com/", id="zero-width-space"),
        pytest.param("https://example.com:0/", id="port-0"),
        pytest.param("https://example.com:65536/", id="port-65536"),
        pytest.param("https://example.com:abc/", id="port-non-numeric"),
        pytest.param("https://example.com:/", id="port-empty"),
        pytest.param("https://example.com:-1/", id="port-negative"),
        pytest.param("https://example.com:४४३/", id="port-non-ascii-digits"),
        pytest.param("https://[fe80::1%25eth0]/", id="zone-id-encoded"),
        pytest.param("https://[fe80::1%eth0]/", id="zone-id-raw"),
        pytest.param("https://%31%32%37.0.0.1/", id="percent-encoded-ip"),
        pytest.param("https://ex%61mple.com/", id="percent-encoded-name"),
        pytest.param("https://::1/", id="unbracketed-ipv6"),
        pytest.param("https://[::1/", id="unterminated-bracket"),
        pytest.param("https://[::1]x/", id="junk-after-bracket"),
        pytest.param("https://[127.0.0.1]/", id="ipv4-in-brackets"),
        pytest.param("https://[v1.fe]/", id="ipvfuture"),
        pytest.param("https://exa_mple.com/", id="underscore"),
        pytest.param("https://-example.com/", id="leading-hyphen"),
        pytest.param("https://example-.com/", id="trailing-hyphen"),
        pytest.param("https://example..com/", id="empty-label"),
        pytest.param("https://example.com../", id="two-trailing-dots"),
        pytest.param("https://./", id="only-dot"),
        pytest.param(f"https://{'a' * 64}.com/", id="label-64-chars"),
        pytest.param(
            f"https://{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 62}.com/", id="name-over-253-chars"
        ),
        pytest.param("https://xn--bücher.example/", id="bad-idna"),
        pytest.param("https://faß.example/", id="idna2003-idna2008-disagree"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_url_is_invalid(url):
    refused(url, policy({"example.com": [PUBLIC_V4]}), "invalid_url")


@pytest.mark.parametrize("value", [None, b"https://example.com/", 42])
def test_non_string_url_is_invalid(value):
    refused(value, policy(), "invalid_url")


def test_url_longer_than_2048_characters_is_too_long():
    prefix = "https://example.com/"
    pol = policy({"example.com": [PUBLIC_V4]})
    longest = prefix + "a" * (2048 - len(prefix))
    assert validate_webhook_url(longest, pol).url == longest
    refused(longest + "a", pol, "url_too_long")


def test_url_that_only_grows_past_the_limit_through_idna_is_too_long():
    prefix = "https://bücher.example/"
    refused(prefix + "a" * (2048 - len(prefix)), policy(), "url_too_long")


def test_longest_valid_hostname_is_accepted():
    name = f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 61}"
    assert len(name) == 253
    assert parse_webhook_url(f"https://{name}/", policy()).host == name


def test_ipv6_literal_keeps_brackets_in_url_only():
    pol = literal_policy()
    parsed = validate_webhook_url(f"https://[{PUBLIC_V6.upper()}]:8443/p", pol)
    assert parsed.host == PUBLIC_V6
    assert parsed.url == f"https://[{PUBLIC_V6}]:8443/p"
    assert parsed.port == 8443


def test_parse_is_syntax_only_and_never_resolves():
    parsed = parse_webhook_url("https://internal.example/", literal_policy())
    assert parsed.ip_literal is None
    assert parsed.host == "internal.example"


# --- host names and resolution -------------------------------------------------------------------


def test_trailing_dot_name_is_resolved_without_the_dot():
    resolver = FakeResolver({"example.com": [PUBLIC_V4]})
    parsed = validate_webhook_url("https://example.com./hook", SsrfPolicy(resolver=resolver))
    assert resolver.calls == [("example.com", 443)]
    assert (parsed.host, parsed.url) == ("example.com", "https://example.com/hook")


@pytest.mark.parametrize("host", ["localhost", "localhost.", "LOCALHOST.", "LocalHost"])
def test_localhost_is_refused_however_spelled(host):
    resolver = FakeResolver({"localhost": ["127.0.0.1", "::1"]})
    error = refused(f"https://{host}/", SsrfPolicy(resolver=resolver), "address_not_allowed")
    assert resolver.calls == [("localhost", 443)]
    assert str(error) == "Webhook host localhost resolves to an address that is not allowed."


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([PUBLIC_V4, "10.0.0.5"], id="public-then-private"),
        pytest.param(["10.0.0.5", PUBLIC_V4], id="private-then-public"),
        pytest.param([PUBLIC_V4, "fd00::5"], id="public-v4-private-v6"),
        pytest.param([PUBLIC_V6, "169.254.169.254"], id="public-v6-metadata-v4"),
    ],
)
def test_name_with_mixed_public_and_private_records_is_refused(records):
    pol = policy({"mixed.example": records})
    error = refused("https://mixed.example/", pol, "address_not_allowed")
    assert str(error) == "Webhook host mixed.example resolves to an address that is not allowed."


def test_refusal_of_a_name_keeps_its_address_in_the_log_not_the_message(caplog):
    """The message must not be an oracle into internal DNS: the address is logged only."""
    pol = policy({"db.internal": ["10.20.30.40"]})
    with caplog.at_level(logging.WARNING, logger="partner_api.delivery.ssrf"):
        error = refused("https://db.internal/", pol, "address_not_allowed")
    assert "10.20.30.40" not in str(error) and "private" not in str(error)
    assert "db.internal" in caplog.text and "10.20.30.40" in caplog.text


def test_refusal_of_an_ip_literal_names_the_address_the_caller_typed():
    error = refused("https://10.20.30.40/", literal_policy(), "address_not_allowed")
    assert "10.20.30.40" in str(error) and "private network" in str(error)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"), id="nxdomain"
        ),
        pytest.param(TimeoutError("timed out"), id="timeout"),
        pytest.param(UnicodeError("label too long"), id="unicode-error"),
        pytest.param([], id="no-records"),
        pytest.param(["not-an-ip"], id="garbage-record"),
        pytest.param([PUBLIC_V4, "999.1.1.1"], id="one-garbage-record"),
    ],
)
def test_name_that_does_not_resolve_cleanly_is_unresolvable(answer):
    refused("https://broken.example/", policy({"broken.example": answer}), "host_unresolvable")


def test_unknown_name_is_unresolvable():
    refused("https://nowhere.example/", policy(), "host_unresolvable")


def test_resolver_result_with_zone_suffix_is_parsed_and_still_checked():
    pol = policy({"ll.example": ["fe80::1%eth0"], "ok.example": [f"{PUBLIC_V6}%eth0"]})
    refused("https://ll.example/", pol, "address_not_allowed")
    assert resolve_allowed_addresses("ok.example", 443, pol) == [ipaddress.ip_address(PUBLIC_V6)]


def test_resolve_returns_every_checked_address_in_resolver_order():
    records = [PUBLIC_V6, PUBLIC_V4, "1.1.1.1"]
    resolver = FakeResolver({"multi.example": records})
    result = resolve_allowed_addresses("multi.example", 8443, SsrfPolicy(resolver=resolver))
    assert result == [ipaddress.ip_address(a) for a in records]
    assert resolver.calls == [("multi.example", 8443)]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("127.0.0.1", "127.0.0.1", id="ipv4"),
        pytest.param("0x7f.1", "127.0.0.1", id="ipv4-hex"),
        pytest.param("::1", "::1", id="ipv6"),
        pytest.param("[::1]", "::1", id="ipv6-bracketed"),
        pytest.param("fe80::1%eth0", "fe80::1", id="ipv6-zone"),
    ],
)
def test_resolve_takes_ip_literal_without_calling_the_resolver(host, expected):
    with pytest.raises(WebhookUrlError) as info:
        resolve_allowed_addresses(host, 443, literal_policy())
    assert info.value.code == "address_not_allowed"
    assert expected in str(info.value)
    allow = literal_policy(allow_networks=parse_allow_cidrs("127.0.0.0/8, ::1/128, fe80::/10"))
    assert resolve_allowed_addresses(host, 443, allow) == [ipaddress.ip_address(expected)]


@pytest.mark.parametrize("host", ["", "bücher.example", "exa mple.com", "256.1.1.1", "a..b"])
def test_resolve_refuses_a_host_that_is_not_an_ascii_name_or_ip(host):
    with pytest.raises(WebhookUrlError) as info:
        resolve_allowed_addresses(host, 443, literal_policy())
    assert info.value.code == "host_unresolvable"


def test_resolve_strips_trailing_dot_and_lowercases_before_resolving():
    resolver = FakeResolver({"localhost": ["127.0.0.1"]})
    with pytest.raises(WebhookUrlError) as info:
        resolve_allowed_addresses("LocalHost.", 443, SsrfPolicy(resolver=resolver))
    assert info.value.code == "address_not_allowed"
    assert resolver.calls == [("localhost", 443)]


def test_rebinding_is_caught_on_the_next_resolution():
    class Rebinding:
        def __init__(self):
            self.answers = [[PUBLIC_V4], ["127.0.0.1"]]

        def __call__(self, host, port):
            return self.answers.pop(0)

    pol = SsrfPolicy(resolver=Rebinding())
    assert resolve_allowed_addresses("rebind.example", 443, pol) == [
        ipaddress.IPv4Address(PUBLIC_V4)
    ]
    with pytest.raises(WebhookUrlError) as info:
        resolve_allowed_addresses("rebind.example", 443, pol)
    assert info.value.code == "address_not_allowed"


def test_idna_host_is_converted_to_ascii_before_resolving():
    resolver = FakeResolver({"xn--bcher-kva.example": [PUBLIC_V4]})
    pol = SsrfPolicy(resolver=resolver)
    for url in ("https://bücher.example/", "https://BÜCHER.example/"):
        parsed = validate_webhook_url(url, pol)
        assert parsed.host == "xn--bcher-kva.example"
        assert parsed.url == "https://xn--bcher-kva.example/"
    assert {call[0] for call in resolver.calls} == {"xn--bcher-kva.example"}


def test_validate_returns_the_parsed_url_after_resolving():
    resolver = FakeResolver({"hooks.example.com": [PUBLIC_V4]})
    parsed = validate_webhook_url(
        "https://hooks.example.com:8443/in", SsrfPolicy(resolver=resolver)
    )
    assert parsed == WebhookUrl(
        url="https://hooks.example.com:8443/in",
        scheme="https",
        host="hooks.example.com",
        port=8443,
    )
    assert resolver.calls == [("hooks.example.com", 8443)]


# --- operator allow list -------------------------------------------------------------------------


def test_allow_list_makes_loopback_reachable():
    pol = literal_policy(allow_networks=parse_allow_cidrs("127.0.0.0/8"))
    parsed = validate_webhook_url("https://127.0.0.1:8443/", pol)
    assert (parsed.url, parsed.port) == ("https://127.0.0.1:8443/", 8443)
    validate_webhook_url("https://[::ffff:127.0.0.1]/", pol)
    assert is_address_allowed("::ffff:127.0.0.1", pol.allow_networks)
    assert not is_address_allowed("::1", pol.allow_networks)
    assert not is_address_allowed("::ffff:10.0.0.1", pol.allow_networks)
    refused("https://10.0.0.1/", pol, "address_not_allowed")


def test_allow_list_applies_to_resolved_names():
    pol = policy({"localhost": ["127.0.0.1"]}, allow_networks=parse_allow_cidrs("127.0.0.0/8"))
    assert validate_webhook_url("https://localhost:8443/", pol).host == "localhost"
    mixed = policy(
        {"svc.internal": ["127.0.0.1", "10.0.0.1"]},
        allow_networks=parse_allow_cidrs("127.0.0.0/8"),
    )
    refused("https://svc.internal/", mixed, "address_not_allowed")


def test_ipv6_allow_list_entry_for_mapped_range_works():
    nets = parse_allow_cidrs("::ffff:127.0.0.0/104")
    assert is_address_allowed("::ffff:127.0.0.1", nets)
    assert not is_address_allowed("127.0.0.1", nets)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "::1", "fd00::1", "169.254.169.254"])
def test_empty_allow_list_reaches_nothing_private(address):
    assert not is_address_allowed(address, ())
    assert not is_address_allowed(address, parse_allow_cidrs(""))
    refused(url_for(address), literal_policy(allow_networks=()), "address_not_allowed")


def test_policy_accepts_allow_networks_as_strings_or_list():
    pol = SsrfPolicy(allow_networks=["127.0.0.0/8"], resolver=must_not_resolve)
    assert pol.allow_networks == (ipaddress.ip_network("127.0.0.0/8"),)
    hash(pol)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("", (), id="empty"),
        pytest.param("   ", (), id="blank"),
        pytest.param("127.0.0.0/8", ("127.0.0.0/8",), id="one"),
        pytest.param("127.0.0.0/8, ::1/128", ("127.0.0.0/8", "::1/128"), id="v4-and-v6"),
        pytest.param(" 10.0.0.0/8 ,fd00::/8, ", ("10.0.0.0/8", "fd00::/8"), id="spaces-and-comma"),
        pytest.param("192.168.1.10", ("192.168.1.10/32",), id="bare-address"),
    ],
)
def test_parse_allow_cidrs_accepts_good_values(value, expected):
    assert parse_allow_cidrs(value) == tuple(ipaddress.ip_network(n) for n in expected)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("localhost", id="name"),
        pytest.param("10.0.0.0/33", id="prefix-too-long"),
        pytest.param("10.0.0.1/8", id="host-bits-set"),
        pytest.param("127.0.0.0/8; ::1/128", id="wrong-separator"),
        pytest.param("fe80::%eth0/64", id="zone-id"),
        pytest.param("127.0.0.0/8, nope", id="second-entry-bad"),
    ],
)
def test_parse_allow_cidrs_rejects_bad_values_with_a_clear_message(value):
    with pytest.raises(ValueError, match="network|zone id"):
        parse_allow_cidrs(value)


# --- error type and system resolver --------------------------------------------------------------


def test_error_has_stable_code_and_human_message():
    error = refused("ftp://example.com/", policy(), "url_scheme_not_allowed")
    assert isinstance(error, DomainError) and error.field == "url"
    assert str(error) == error.message
    assert error.message.endswith(".")
    assert error.code in webhook_url.ERROR_CODES
    clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object, a round trip
    assert (clone.code, clone.message) == (error.code, error.message)


def test_system_resolver_is_the_default():
    assert SsrfPolicy().resolver is system_resolver
    assert policy_for(Config()).resolver is system_resolver


def test_policy_for_config_carries_its_settings_and_deadline():
    hanging_called = threading.Event()

    def hanging(host, port):
        hanging_called.set()
        threading.Event().wait(5)
        return []

    config = Config(
        allow_http_webhooks=True, webhook_allow_cidrs=parse_allow_cidrs("::1/128"), resolver=hanging
    )
    policy = policy_for(config, dns_deadline=0.1)
    assert policy.allow_http and policy.allow_networks == (ipaddress.ip_network("::1/128"),)
    with pytest.raises(WebhookUrlError) as caught:
        resolve_allowed_addresses("slow.example", 443, policy)
    assert caught.value.code == "host_unresolvable" and hanging_called.is_set()


def test_system_resolver_returns_numeric_host_without_dns():
    assert system_resolver("127.0.0.1", 443) == ["127.0.0.1"]


def test_system_resolver_deduplicates_in_order(monkeypatch):
    canned = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (PUBLIC_V6, 443, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, 443)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (PUBLIC_V6, 443, 0, 0)),
    ]
    calls = []

    def fake_getaddrinfo(host, port, *args, **kwargs):
        calls.append((host, port, kwargs.get("type")))
        return canned

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert system_resolver(PUBLIC_V4, 443) == [PUBLIC_V6, PUBLIC_V4]
    assert calls == [(PUBLIC_V4, 443, socket.SOCK_STREAM)]


def test_resolver_with_deadline_passes_answers_and_errors_through():
    wrapped = dns.resolver_with_deadline(lambda host, port: ["93.184.216.34"], 1.0)
    assert wrapped("example.com", 443) == ["93.184.216.34"]

    def failing(host, port):
        raise socket.gaierror("no such name")

    with pytest.raises(socket.gaierror):
        dns.resolver_with_deadline(failing, 1.0)("example.com", 443)


def test_a_resolver_slower_than_the_deadline_is_unresolvable():
    release = threading.Event()

    def hanging(host, port):
        release.wait(10)
        return ["93.184.216.34"]

    policy = ssrf.SsrfPolicy(resolver=dns.resolver_with_deadline(hanging, 0.1))
    try:
        with pytest.raises(WebhookUrlError) as excinfo:
            ssrf.validate_webhook_url("https://slow.example.com/", policy)
        assert excinfo.value.code == "host_unresolvable"
    finally:
        release.set()
