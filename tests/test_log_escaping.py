"""Log forging: a text line escapes every value it writes, so whatever a caller sends (a
percent-encoded CR, LF, ESC, space or `=` in a path, an exception's message) leaves one line
whose fields are the ones the code wrote. The JSON format writes the value as it is."""

from __future__ import annotations

import io
import json
import logging
import re
import urllib.parse

import pytest

from harness.net import get
from harness.servers import start_gunicorn
from partner_api import logs
from partner_api.db import apply_schema, bind

# A text line: time, level, logger, message, then `key=value` fields whose values hold no space.
LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>\S+) (?P<message>\S+)"
    r"(?P<fields>( [a-z_]+=\S*)*)"
)
REQUEST_FIELDS = ["request_id", "method", "path", "status", "duration_ms"]
# Each class of character a caller may smuggle into a path, percent-encoded (as UTF-8).
CHARACTERS = {
    "CR LF": "\r\n",
    "LF": "\n",
    "CR": "\r",
    "ESC": "\x1b[2J",
    "NUL": "\x00",
    "TAB": "\t",
    "other C0": "\x01\x1f",
    "DEL": "\x7f",
    "C1 NEL": "\x85",
    "C1 CSI": "\x9b",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "no-break space": "\xa0",
    "space": " ",
    "equals": "=",
    "quote": '"',
    "backslash": "\\",
}
FORGED = "2026-01-01 00:00:00,000 INFO partner_api.requests request status=200 forged=1"


def unescaped(text: str) -> str:
    """What `logs.escaped` wrote, read back."""
    return re.sub(
        r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8}))",
        lambda m: chr(int(m.group(1) or m.group(2) or m.group(3), 16)),
        text,
    )


def fields_of(line: str) -> dict:
    match = LINE.fullmatch(line)
    assert match, f"not one well-formed line: {line!r}"
    return dict(field.split("=", 1) for field in match.group("fields").split())


@pytest.fixture
def logged():
    """Root's handlers replaced by one text handler writing to a string (as under gunicorn)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    stream = io.StringIO()
    root.handlers[:] = [logs.log_handler("text", stream)]
    root.setLevel(logging.INFO)
    yield stream
    root.handlers[:] = saved
    root.setLevel(level)


@pytest.mark.parametrize("characters", CHARACTERS.values(), ids=CHARACTERS.keys())
def test_a_path_with_any_character_is_one_request_line_with_only_its_own_fields(
    app, logged, characters
):
    path = f"/a{characters}b {FORGED}{characters}x=1"
    answer = app.test_client().get(urllib.parse.quote(path, safe="/"))
    assert answer.status_code == 404
    [line] = logged.getvalue().splitlines()
    fields = fields_of(line)
    assert list(fields) == REQUEST_FIELDS
    assert unescaped(fields["path"]) == path  # nothing lost: the escapes read back
    assert fields["status"] == "404"


def test_a_method_is_escaped_like_a_path(app, logged):
    app.test_client().open("/x", method="GET status=500\r\nforged=1")
    [line] = logged.getvalue().splitlines()
    assert list(fields_of(line)) == REQUEST_FIELDS


def test_a_value_in_a_message_cannot_end_the_line_or_add_a_field(logged):
    logging.getLogger("dispatcher").error(
        "poll stopped by a database error, retrying next poll: %s", f"refused\r\n{FORGED}"
    )
    [line] = logged.getvalue().splitlines()
    assert "=" not in line  # the only fields a caller's text could make
    assert line.endswith("next poll: refused\\x0d\\x0a" + FORGED.replace("=", "\\x3d"))


def test_an_exception_message_stays_below_its_line_and_cannot_pass_for_a_record(logged):
    try:
        raise RuntimeError(f"receiver said\r\n{FORGED}\x1b[2J")
    except RuntimeError:
        logging.getLogger("dispatcher").exception("attempt", extra={"delivery": "dlv_1"})
    first, *below = logged.getvalue().splitlines()
    assert fields_of(first) == {"delivery": "dlv_1"}
    assert below[0] == "  Traceback (most recent call last):"
    assert all(line.startswith("  ") for line in below)  # continuation, never a record
    assert not any(re.search(r"[\x00-\x1f\x7f]", line) for line in below)
    assert below[-2:] == ["  RuntimeError: receiver said\\x0d", f"  {FORGED}\\x1b[2J"]


def test_escaping_leaves_plain_values_and_printable_text_alone():
    assert logs.escaped("/api/v1/partner/webhooks/wh_1") == "/api/v1/partner/webhooks/wh_1"
    assert logs.escaped("/café/日本") == "/café/日本"
    assert logs.escaped('a b=c"d\\e\r\n\x1b\x85\u2028\U000e0001') == (
        "a\\x20b\\x3dc\\x22d\\x5ce\\x0d\\x0a\\x1b\\x85\\u2028\\U000e0001"
    )


def test_the_json_format_keeps_the_value_as_it_is(app):
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    stream = io.StringIO()
    root.handlers[:] = [logs.log_handler("json", stream)]
    root.setLevel(logging.INFO)
    try:
        app.test_client().get("/a%0d%0ab%3D1%20c")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["path"] == "/a\r\nb=1 c"


def test_under_gunicorn_a_forged_path_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'api.sqlite3'}"
    bind(url)
    apply_schema()
    paths = [f"/a{c}b {FORGED}" for c in ("\r\n", "\n", "\x1b[2J", "\x85", " ", "=")]
    log_path = tmp_path / "gunicorn.log"
    with start_gunicorn({"DATABASE_URL": url}, log_path, workers=1, config=None) as server:
        for path in paths:
            assert get(server.port, urllib.parse.quote(path, safe="/"))[0] == 404
    lines = [line for line in log_path.read_text().splitlines() if "partner_api.requests" in line]
    assert len(lines) == len(paths)
    assert [unescaped(fields_of(line)["path"]) for line in lines] == paths
    assert "forged" not in "".join(
        line for line in log_path.read_text().splitlines() if "partner_api.requests" not in line
    )
