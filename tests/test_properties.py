"""Properties over generated input: list cursors round-trip and refuse only with invalid_cursor,
signatures verify independently and break on any change, the URL parser is total and idempotent."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.provisional import domains
from urllib3.util import parse_url

from partner_api import pagination
from partner_api.db import apply_schema, bind, database
from partner_api.delivery import signing
from partner_api.delivery.ssrf import SsrfPolicy
from partner_api.delivery.webhook_url import (
    DEFAULT_PORTS,
    ERROR_CODES,
    MAX_URL_LENGTH,
    WebhookUrlError,
    parse_webhook_url,
)
from partner_api.errors import DomainError

# Derandomized and without an example database, so CI sees the same examples on every run;
# no deadline, because a shared CI machine makes per-example timings meaningless.
PROPERTY = settings(max_examples=150, derandomize=True, database=None, deadline=None)

# ---------------------------------------------------------------------------------------------
# List cursors


@pytest.fixture(scope="module")
def cursor_key(tmp_path_factory):
    """A SQLite database holding the server's cursor signing key, open for the whole module."""
    bind(f"sqlite:///{tmp_path_factory.mktemp('cursors') / 'cursors.sqlite3'}")
    apply_schema()
    with database.connection_context():
        yield
    # Other modules bind their own database per test, so nothing leaks from this one.


def cursor_refused(list_name: str, cursor: str) -> bool:
    """True when decode_cursor refuses with invalid_cursor; any other exception propagates."""
    try:
        pagination.decode_cursor(list_name, cursor)
    except DomainError as error:
        assert error.code == "invalid_cursor"
        assert error.field == "cursor" and error.location == "query"
        return True
    return False


# Timestamps as stored (naive UTC) and, for good measure, with fixed UTC offsets.
offsets = st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23))
moments = st.datetimes(timezones=st.none() | st.builds(dt.timezone, offsets))


@PROPERTY
@given(list_name=st.text(), moment=moments, row_id=st.text())
def test_a_cursor_decodes_to_the_row_it_was_made_from(cursor_key, list_name, moment, row_id):
    cursor = pagination.encode_cursor(list_name, moment, row_id)
    decoded_moment, decoded_id = pagination.decode_cursor(list_name, cursor)
    assert (decoded_moment, decoded_id) == (moment, row_id)
    assert decoded_moment.utcoffset() == moment.utcoffset()


@PROPERTY
@given(
    list_name=st.text(),
    other_list=st.text(),
    moment=moments,
    row_id=st.text(),
)
def test_a_cursor_is_refused_by_every_other_list(cursor_key, list_name, other_list, moment, row_id):
    cursor = pagination.encode_cursor(list_name, moment, row_id)
    assert cursor_refused(other_list, cursor) == (other_list != list_name)


# Any code point, lone surrogates included, so no encoding step can surprise the decoder.
any_text = st.text(st.characters(exclude_categories=()))


@PROPERTY
@given(list_name=st.text(), cursor=any_text | st.from_regex(r"[A-Za-z0-9_.-]{0,80}"))
def test_random_text_is_refused_as_invalid_cursor(cursor_key, list_name, cursor):
    assert cursor_refused(list_name, cursor)


@PROPERTY
@given(list_name=st.text(), moment=moments, row_id=st.text(), data=st.data())
def test_a_tampered_cursor_is_refused_or_still_means_the_same_row(
    cursor_key, list_name, moment, row_id, data
):
    cursor = pagination.encode_cursor(list_name, moment, row_id)
    position = data.draw(st.integers(0, len(cursor)), label="position")
    replaced = data.draw(st.integers(0, 2), label="characters replaced")
    inserted = data.draw(any_text.filter(lambda t: t != cursor[position : position + replaced]))
    tampered = cursor[:position] + inserted + cursor[position + replaced :]
    # A part's last base64 character can carry unused bits (the signature's does: "…dzo" and
    # "…dzp" decode alike), so a few edits change nothing: then it must mean the same row.
    if not cursor_refused(list_name, tampered):
        assert pagination.decode_cursor(list_name, tampered) == (moment, row_id)


# Anything JSON can hold, signed with the real key: the shape check must hold after the signature.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=10,
)


@PROPERTY
@given(list_name=st.text(), payload=json_values | st.lists(json_values, min_size=3, max_size=3))
def test_a_signed_payload_of_another_shape_is_refused(cursor_key, list_name, payload):
    cursor = pagination._signer().dumps(payload)
    try:
        moment, row_id = pagination.decode_cursor(list_name, cursor)
    except DomainError as error:
        assert error.code == "invalid_cursor"
    else:  # only a three-item [list name, ISO time, id] gets through
        assert len(payload) == 3 and next(iter(payload)) == list_name
        assert isinstance(moment, dt.datetime) and isinstance(row_id, str)


# ---------------------------------------------------------------------------------------------
# Signatures


def verify_independently(secret: str, timestamp: int, body: bytes, header: str) -> bool:
    """The recipe in docs/partners.md, computed by OpenSSL (through cryptography), not hmac."""
    version, _, hex_digest = header.partition("=")
    if version != "v1":
        return False
    try:
        digest = bytes.fromhex(hex_digest)
    except ValueError:
        return False
    mac = crypto_hmac.HMAC(secret.encode("utf-8"), hashes.SHA256())
    mac.update(f"{timestamp}.".encode() + body)
    try:
        mac.verify(digest)
    except InvalidSignature:
        return False
    return True


timestamps = st.integers(min_value=0, max_value=2**40)


@PROPERTY
@given(secret=st.text(), timestamp=timestamps, body=st.binary())
def test_a_signature_verifies_with_an_independent_hmac(secret, timestamp, body):
    assert verify_independently(secret, timestamp, body, signing.signature(secret, timestamp, body))


@PROPERTY
@given(key=st.binary(min_size=1, max_size=64), timestamp=timestamps, body=st.binary())
def test_the_standard_webhooks_signature_verifies_with_an_independent_hmac(key, timestamp, body):
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = signing.attempt_headers(secret, "evt_x", timestamp, body)
    assert headers["webhook-timestamp"] == headers[signing.TIMESTAMP_HEADER] == str(timestamp)
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(b"evt_x." + str(timestamp).encode() + b"." + body)
    expected = "v1," + base64.b64encode(mac.finalize()).decode()
    assert headers["webhook-signature"] == expected


@PROPERTY
@given(secret=st.text(), timestamp=timestamps, body=st.binary(min_size=1), data=st.data())
def test_changing_any_byte_of_the_body_breaks_the_signature(secret, timestamp, body, data):
    header = signing.signature(secret, timestamp, body)
    position = data.draw(st.integers(0, len(body) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="xor")
    changed = body[:position] + bytes([body[position] ^ flip]) + body[position + 1 :]
    assert not verify_independently(secret, timestamp, changed, header)
    assert signing.signature(secret, timestamp, changed) != header


@PROPERTY
@given(secret=st.text(), timestamp=timestamps, other=timestamps, body=st.binary())
def test_another_timestamp_breaks_the_signature(secret, timestamp, other, body):
    header = signing.signature(secret, timestamp, body)
    assert verify_independently(secret, other, body, header) == (other == timestamp)


# A character is replaced in place, not added or removed: HMAC pads keys shorter than a block
# with zero bytes, so "k" and "k\0" are the same key by design (and secrets never hold NUL).
@PROPERTY
@given(secret=st.text(min_size=1), timestamp=timestamps, body=st.binary(), data=st.data())
def test_changing_any_character_of_the_secret_breaks_the_signature(secret, timestamp, body, data):
    header = signing.signature(secret, timestamp, body)
    position = data.draw(st.integers(0, len(secret) - 1), label="position")
    replacement = data.draw(st.characters().filter(lambda ch: ch != secret[position]))
    other = secret[:position] + replacement + secret[position + 1 :]
    assert not verify_independently(other, timestamp, body, header)
    assert signing.signature(other, timestamp, body) != header


# ---------------------------------------------------------------------------------------------
# Webhook URLs

policies = st.builds(SsrfPolicy, allow_http=st.booleans())

schemes = st.sampled_from(["https", "http", "HTTPS", "hTtP", "ftp", "file", "javascript", ""])
separators = st.sampled_from(["://", ":", ":/", ":///", "//", ":\\\\", ":/\\", "://\\"])
userinfo = st.sampled_from(["", "", "", "user@", "user:pass@", "@", ":@", "a@b@"])
hosts = st.one_of(
    domains(),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
    st.sampled_from(
        [
            "example.com",
            "hooks.example.com.",
            "EXAMPLE.COM",
            "localhost",
            "bücher.example",
            "例え.テスト",
            "xn--nxasmq6b.example",
            "0x7f.1",
            "2130706433",
            "017700000001",
            "1.2.3.4.5",
            "256.1.1.1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[fe80::1%eth0]",
            "[::1",
            "::1",
            "a..b",
            "-a.example",
            "a_b.example",
            "ｅｘａｍｐｌｅ.com",
            "１２７.０.０.１",
            "straße.example",
            "example。com",
            "İ.example",
            "a.ｃｏｍ",
            "",
        ]
    ),
    st.text(max_size=20),
)
ports = st.one_of(
    st.just(""),
    st.integers(-1, 70000).map(lambda port: f":{port}"),
    st.text(max_size=6).map(lambda text: f":{text}"),
)
# Paths and queries of RFC 3986 characters (no '#'), which every webhook URL may have.
plain_paths = st.from_regex(r"([/?][A-Za-z0-9._~!$&'()*+,;=:@/?%-]{0,40})?", fullmatch=True)
paths = st.one_of(
    plain_paths,
    st.sampled_from(["/", "/hooks?x=1&y=2", "?q", "/a#frag", "/%2e%2e/", "/a b", "/@x", "/\\x"]),
    st.text(max_size=40).map(lambda text: f"/{text}"),
)
url_shaped = st.builds(
    lambda *parts: "".join(parts), schemes, separators, userinfo, hosts, ports, paths
)


# Well-formed URLs, in parts: a name or address, maybe a port, a plain path. All acceptable.
well_formed_parts = st.tuples(
    st.sampled_from(["https", "http", "HTTPS", "Http"]),
    st.one_of(domains(), st.ip_addresses().map(str)),
    st.none() | st.integers(1, 65535),
    plain_paths,
)


def join_url(scheme, host, port, path) -> str:
    authority = f"[{host}]" if ":" in host else host
    return f"{scheme}://{authority}{'' if port is None else f':{port}'}{path}"


well_formed_urls = st.builds(lambda parts: join_url(*parts), well_formed_parts)

# Characters that mean something to a URL parser, often enough to matter, or any at all.
tricky_characters = st.sampled_from(
    list("#@\\/?:%[].;,=&+ \t\r\n\x00\x7f\x85\xa0\u200b\u2028\u3000\ufeff\uff0e\uff03")
) | st.characters(exclude_categories=())


@st.composite
def spliced(draw, urls):
    """A URL with one tricky character put anywhere in it."""
    url = draw(urls)
    position = draw(st.integers(0, len(url)))
    return url[:position] + draw(tricky_characters) + url[position:]


@st.composite
def well_formed_with_a_slip(draw):
    """A well-formed URL with one tricky character put into its scheme, host, port or path."""
    scheme, host, port, path = draw(well_formed_parts)
    port = "" if port is None else f":{port}"
    authority = f"[{host}]" if ":" in host else host
    parts = [scheme, "://", authority, port, path]
    part = draw(st.sampled_from([4, 2, 3, 0]))  # path first: the simplest choice comes often
    position = draw(st.integers(0, len(parts[part])))
    parts[part] = parts[part][:position] + draw(tricky_characters) + parts[part][position:]
    return "".join(parts)


webhook_urls = st.one_of(any_text, url_shaped, spliced(url_shaped), well_formed_urls)


def check_accepted(parsed, policy) -> None:
    """What every accepted URL satisfies."""
    url = parsed.url
    assert parse_webhook_url(url, policy) == parsed  # normalising is idempotent
    authority = url.split("://", 1)[1].split("/", 1)[0]
    assert not any(ch.isspace() for ch in url)
    assert "#" not in url and "@" not in authority
    assert len(url) <= MAX_URL_LENGTH
    assert parsed.scheme in (("https", "http") if policy.allow_http else ("https",))
    # The sender parses with urllib3: it must request exactly the host and port we checked.
    theirs = parse_url(url)
    bracketed = parsed.ip_literal is not None and parsed.ip_literal.version == 6
    assert theirs.scheme == parsed.scheme
    assert theirs.host == (f"[{parsed.host}]" if bracketed else parsed.host)
    assert (theirs.port or DEFAULT_PORTS[parsed.scheme]) == parsed.port


@settings(PROPERTY, max_examples=600)
@given(url=webhook_urls, policy=policies)
def test_any_text_is_parsed_or_refused_with_a_documented_code(url, policy):
    try:
        parsed = parse_webhook_url(url, policy)
    except WebhookUrlError as error:
        assert error.code in ERROR_CODES
        assert error.field == "url" and error.message
        event(f"refused: {error.code}")  # the mix shows with --hypothesis-show-statistics
        return
    event("accepted")
    check_accepted(parsed, policy)


@settings(PROPERTY, max_examples=400)
@given(url=well_formed_with_a_slip(), policy=policies)
def test_a_good_url_with_a_character_slipped_in_is_refused_or_still_sound(url, policy):
    try:
        parsed = parse_webhook_url(url, policy)
    except WebhookUrlError as error:
        assert error.code in ERROR_CODES
        return
    check_accepted(parsed, policy)


@PROPERTY
@given(parts=well_formed_parts)
def test_a_well_formed_url_is_accepted_with_its_scheme_host_port_and_path(parts):
    scheme, host, port, path = parts
    policy = SsrfPolicy(allow_http=True)
    parsed = parse_webhook_url(join_url(*parts), policy)
    check_accepted(parsed, policy)
    assert parsed.scheme == scheme.lower()
    assert parsed.host == str(ipaddress.ip_address(host) if ":" in host else host.lower())
    assert parsed.port == (DEFAULT_PORTS[parsed.scheme] if port is None else port)
    assert parsed.url.endswith(path if path.startswith("/") else "/" + path)
