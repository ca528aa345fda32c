"""The receiver kit (examples/receiver.py): `verify_webhook` for each reason it refuses, and the
example server, run as a real process, receiving real deliveries from the dispatcher."""

from __future__ import annotations

import datetime as dt
import http.client
import importlib.util
import json
import queue
import re
import shlex
import subprocess
import sys
import threading

import pytest

from dispatcher.dispatch import Dispatcher
from partner_api import clock as clock_module
from partner_api.config import ROOT
from partner_api.db import database
from partner_api.delivery import signing, subscriptions
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.subscriptions import new_secret
from partner_api.models import Delivery

from .conftest import FakeClock, bearer

RECEIVER = ROOT / "examples" / "receiver.py"
HOOKS = "/api/v1/partner/webhooks"
NOW = 1_795_780_830
BODY = b'{"event":"vc.test.ping","id":"evt_1","subscription_id":"wh_1","data":{"n":1}}'
OURS = ("X-VC-Timestamp", "X-VC-Signature")
STANDARD = ("webhook-id", "webhook-timestamp", "webhook-signature")


def load_receiver():
    spec = importlib.util.spec_from_file_location("receiver_example", RECEIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


receiver = load_receiver()
SECRET = new_secret()


def signed(names=OURS + STANDARD, *, secret=SECRET, timestamp=NOW, body=BODY) -> dict:
    """Headers as the dispatcher signs them, keeping only `names`."""
    headers = signing.attempt_headers(secret, "evt_1", timestamp, body)
    return {name: value for name, value in headers.items() if name in names}


def refusal(body, headers, secret=SECRET, now=NOW) -> str:
    with pytest.raises(receiver.WebhookVerificationError) as caught:
        receiver.verify_webhook(body, headers, secret, now=now)
    return caught.value.reason


@pytest.mark.parametrize("names", [OURS, STANDARD, OURS + STANDARD], ids=["ours", "std", "both"])
def test_a_signed_delivery_is_verified_and_parsed(names):
    assert receiver.verify_webhook(BODY, signed(names), SECRET, now=NOW) == json.loads(BODY)


def test_header_names_are_case_insensitive():
    headers = {name.upper(): value for name, value in signed(STANDARD).items()}
    assert receiver.verify_webhook(BODY, headers, SECRET, now=NOW)["id"] == "evt_1"


def test_a_standard_signature_among_several_keys_is_found():
    headers = signed(STANDARD)
    other = signed(STANDARD, secret=new_secret())["webhook-signature"]
    headers["webhook-signature"] = f"v2,abc {other} {headers['webhook-signature']}"
    assert receiver.verify_webhook(BODY, headers, SECRET, now=NOW)["id"] == "evt_1"


@pytest.mark.parametrize(
    "headers",
    [{}, signed(OURS[:1]), signed(OURS[1:]), signed(STANDARD[:2]), signed(STANDARD[1:])],
    ids=["none", "timestamp_only", "signature_only", "std_no_signature", "std_no_id"],
)
def test_missing_headers_are_refused(headers):
    assert refusal(BODY, headers) == "missing_header"


@pytest.mark.parametrize(
    "change",
    [
        {"X-VC-Timestamp": "1795780830.5"},
        {"X-VC-Timestamp": "-1795780830"},
        {"X-VC-Timestamp": ""},
        {"X-VC-Signature": "sha256=" + "0" * 64},
        {"X-VC-Signature": "v1=" + "A" * 64},
        {"X-VC-Signature": "v1=abc"},
    ],
)
def test_our_headers_in_another_format_are_refused(change):
    assert refusal(BODY, signed(OURS) | change) == "bad_format"


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-timestamp": "soon"},
        {"webhook-signature": "v1,not*base64"},
        {"webhook-signature": "   "},
    ],
)
def test_standard_headers_in_another_format_are_refused(change):
    assert refusal(BODY, signed(STANDARD) | change) == "bad_format"


@pytest.mark.parametrize("names", [OURS, STANDARD], ids=["ours", "std"])
def test_timestamps_more_than_the_tolerance_away_are_refused(names):
    headers = signed(names)
    assert receiver.verify_webhook(BODY, headers, SECRET, now=NOW + 300)  # the edge is inside
    assert receiver.verify_webhook(BODY, headers, SECRET, now=NOW - 300)
    assert refusal(BODY, headers, now=NOW + 301) == "stale_timestamp"
    assert refusal(BODY, headers, now=NOW - 301) == "future_timestamp"


@pytest.mark.parametrize("names", [OURS, STANDARD], ids=["ours", "std"])
def test_an_altered_body_anstranger_or_a_moved_timestamp_is_a_mismatch(names):
    headers = signed(names)
    assert refusal(BODY.replace(b'"n":1', b'"n":2'), headers) == "mismatch"
    assert refusal(BODY, headers, secret=new_secret()) == "mismatch"
    moved = {name: str(NOW + 1) if "imestamp" in name else v for name, v in headers.items()}
    assert refusal(BODY, moved) == "mismatch"


def test_a_standard_signature_for_another_event_id_is_a_mismatch():
    assert refusal(BODY, signed(STANDARD) | {"webhook-id": "evt_2"}) == "mismatch"


def test_a_signed_body_that_is_not_json_is_refused():
    body = b"not json"
    assert refusal(body, signed(OURS, body=body)) == "bad_format"


@pytest.mark.parametrize("secret", ["", "s3cret", "whsec_", "whsec_not base64"])
def test_a_secret_that_is_not_whsec_base64_is_a_value_error(secret):
    with pytest.raises(ValueError):
        receiver.verify_webhook(BODY, signed(), secret, now=NOW)


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], {}, "error: no secret"),
        (["--secret", "s3cret"], {}, "error: the secret is not whsec_"),
        ([], {"WEBHOOK_SECRET": "whsec_"}, "error: the secret is not whsec_"),
        (["--secret", SECRET, "--port", "70000"], {}, "--port must be 0-65535"),
    ],
)
def test_the_example_refuses_to_start_without_a_usable_secret_or_port(args, env, message):
    result = subprocess.run(
        [sys.executable, str(RECEIVER), "--port", "0", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


class ReceiverProcess:
    """examples/receiver.py as a child process on an ephemeral port; stdout read line by line."""

    def __init__(self, secret: str, *options: str):
        self.process = subprocess.Popen(
            [sys.executable, "-u", str(RECEIVER), "--port", "0", *options],
            env={"PATH": "/usr/bin:/bin", "WEBHOOK_SECRET": secret},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        banner = self.process.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", banner)
        assert match, banner + self.process.stderr.read()
        self.base_url = match.group(1)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self):
        for line in self.process.stdout:
            self.lines.put(line)

    def printed(self, count: int) -> list[dict]:
        lines = [self.lines.get(timeout=10) for _ in range(count)]
        assert all(line.startswith("verified: ") for line in lines), lines
        return [json.loads(line.removeprefix("verified: ")) for line in lines]

    def stop(self) -> tuple[list[str], str]:
        """Stop it; returns (stdout lines not yet read, all of stderr after the banner)."""
        self.process.terminate()
        _, stderr = self.process.communicate(timeout=10)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return rest, stderr


@pytest.fixture
def real_time_clock():
    """A fake clock 10 minutes behind the real one: the receiver checks timestamps against
    its own clock, so the first delivery is stale until the test moves this clock on."""
    fake = FakeClock(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=10))
    clock_module.set_clock(fake)
    yield fake
    clock_module.reset_clock()


# Long: one receiver process, fed real deliveries, replays and forgeries in turn.
def test_the_example_receiver_verifies_real_deliveries_once_each_and_refuses_the_rest(
    client, make_key, config, real_time_clock, monkeypatch
):
    org, _, token = make_key()
    secret = new_secret()
    kit = ReceiverProcess(secret)
    dispatcher = Dispatcher(config)
    try:

        def subscribe(path, *, same_secret=True):
            if same_secret:  # the receiver was started with this secret before the create call
                monkeypatch.setattr(subscriptions, "new_secret", lambda: secret)
            answer = client.post(HOOKS, json={"url": kit.base_url + path}, headers=bearer(token))
            monkeypatch.undo()
            assert answer.status_code == 201, answer.get_json()
            assert (answer.get_json()["secret"] == secret) is same_secret
            return answer.get_json()["id"]

        first = subscribe("/a")
        ping = client.post(
            f"{HOOKS}/{first}/test", json={"secret": secret}, headers=bearer(token)
        ).get_json()
        dispatcher.run_until_idle()  # signed 10 minutes ago by the receiver's clock: refused

        real_time_clock.advance(600)  # now the retry of that ping is due, freshly signed
        second, stranger = subscribe("/b"), subscribe("/c", same_secret=False)
        with database.connection_context():
            # One event for all three: /a and /b bring the receiver the same event id (as a
            # redelivery after a lost answer would), /c signs with another secret.
            event, _ = publish_event(org.id, "vc.test.ping", {"n": 2})
        dispatcher.run_until_idle()

        printed = kit.printed(2)
    finally:
        dispatcher.close()
        rest, stderr = kit.stop()

    assert sorted(e["id"] for e in printed) == sorted([ping["event_id"], event.id])
    assert rest == []  # the repeat was not printed again
    assert f"repeat of {event.id} ignored" in stderr

    def audit(subscription_id):
        answer = client.get(f"{HOOKS}/{subscription_id}/failures", headers=bearer(token))
        return [(f["response_status"], f["response_excerpt"]) for f in answer.get_json()["data"]]

    [(status, excerpt)] = audit(first)
    assert status == 400 and excerpt.startswith("rejected: stale_timestamp")
    assert audit(second) == []
    [(status, excerpt)] = audit(stranger)
    assert status == 400 and excerpt.startswith("rejected: mismatch")
    with database.connection_context():
        outcomes = {(d.subscription_id, d.event_id, d.status) for d in Delivery.select()}
    assert outcomes == {
        (first, ping["event_id"], "delivered"),  # its retry, signed on time
        (first, event.id, "delivered"),
        (second, event.id, "delivered"),  # answered 200 as a repeat
        (stranger, event.id, "pending"),  # to be retried
    }


def test_the_example_receiver_with_fail_answers_500_and_the_audit_shows_it(
    client, make_key, config
):
    _, _, token = make_key()
    kit = ReceiverProcess(new_secret(), "--fail")
    dispatcher = Dispatcher(config)
    try:
        sub = client.post(HOOKS, json={"url": kit.base_url + "/hooks"}, headers=bearer(token))
        sub = sub.get_json()
        client.post(
            f"{HOOKS}/{sub['id']}/test", json={"secret": sub["secret"]}, headers=bearer(token)
        )
        dispatcher.run_until_idle()
    finally:
        dispatcher.close()
        printed, stderr = kit.stop()
    assert printed == [] and "500 answering 500 to every delivery" in stderr
    answer = client.get(f"{HOOKS}/{sub['id']}/failures", headers=bearer(token))
    [failure] = answer.get_json()["data"]
    assert failure["response_status"] == 500 and "--fail" in failure["response_excerpt"]


def test_the_readme_runs_the_kit_with_options_it_has_and_serves_no_directory():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^python3 examples/receiver\.py ([^#\n]*)", readme, re.M)
    assert len(commands) >= 2
    for command in commands:
        args = receiver.build_parser().parse_args(shlex.split(command))
        assert args.secret and args.port == 9999, command
    assert "--fail" in " ".join(commands)
    # A file server started in the repository would hand out instance/ and its secrets.
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text()
        assert "http.server" not in text and "SimpleHTTP" not in text, page


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Transfer-Encoding": "chunked"}, 411),
        ({"Content-Length": "\u00b2"}, 411),  # a digit to str.isdigit, not to HTTP
        ({"Content-Length": str(2 * 1024 * 1024)}, 413),
        ({"Content-Length": "2", "X-VC-Timestamp": "1", "X-VC-Signature": "v1=0"}, 400),
    ],
)
def test_the_example_receiver_refuses_malformed_requests_and_keeps_serving(headers, status):
    kit = ReceiverProcess(SECRET)
    try:
        connection = http.client.HTTPConnection(kit.base_url.removeprefix("http://"), timeout=10)
        connection.putrequest("POST", "/hooks", skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        if headers.get("Transfer-Encoding") == "chunked":
            connection.send(b"2\r\n{}\r\n0\r\n\r\n")
        elif headers.get("Content-Length") == "2":
            connection.send(b"{}")
        assert connection.getresponse().status == status
        connection.close()
        assert kit.process.poll() is None  # still serving
    finally:
        printed, stderr = kit.stop()
    assert printed == [] and "Traceback" not in stderr
