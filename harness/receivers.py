"""Webhook receivers on loopback, in this process and in their own.

In this process: `Receiver` records every request and answers from a script (optionally after
a delay); `SilentReceiver` reads requests and never answers (a black hole that still completes
the TCP handshake).

In its own process: `ReceiverProcess(MODE)` runs `python -m harness.receivers MODE`, which
prints `port N` once listening, then `<event id> <unix time>` for every request it read in
full. MODE: `ok` answers 204 at once, `delay:SECONDS` after that long, `fail` answers 500 at
once, `silent` reads the request and never answers.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time

from partner_api.config import ROOT


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records requests and answers from a script.

    `responses` is a list of (status, headers, body) used in order; the last one repeats.
    `on_request(body)`, if given, is called as each request has been read, before any delay.
    `port`: 0 for any free one, or the port a stored URL names (OSError when it is taken).
    """

    def __init__(
        self, responses=((200, {}, b"ok"),), delay: float = 0.0, on_request=None, port: int = 0
    ):
        self.requests: list[dict] = []
        self.connections = 0
        self.responses = list(responses)
        self.delay = delay
        self.first_request = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                receiver.connections += 1
                super().setup()

            def do_POST(self):  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender died mid-request: nothing was delivered
                if on_request is not None:
                    on_request(body)
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                receiver.first_request.set()
                if receiver.delay:
                    time.sleep(receiver.delay)
                index = min(len(receiver.requests) - 1, len(receiver.responses) - 1)
                status, headers, payload = receiver.responses[index]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def read_request(conn: socket.socket) -> bytes | None:
    """Read one HTTP request (head, then a Content-Length body); its body, or None if the
    sender closed the connection first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return body


class SilentReceiver:
    """Accepts connections and reads the requests, then never answers (a dead endpoint that
    still completes the TCP handshake). Counts the requests it has read (`requests`);
    `on_request(body)`, if given, is called for each."""

    def __init__(self, on_request=None, backlog: int = 128):
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.on_request = on_request
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, path: str = "/dead") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._held.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            body = read_request(conn)
        except OSError:
            return
        if body is None:
            return
        with self._lock:
            self.requests += 1
        if self.on_request is not None:
            self.on_request(body)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._closed.set()
        self.listener.close()
        with self._lock:
            for conn in self._held:
                conn.close()


class ReceiverProcess:
    """`python -m harness.receivers MODE` in a child process; records when each event id
    arrived (`arrivals`, the first time) and every arrival time (`times`)."""

    def __init__(self, mode: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.receivers", mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.process.stdout.readline().split()[1])
        self.arrivals: dict[str, float] = {}
        self.times: list[float] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            event_id, moment = line.split()
            with self._changed:
                self.arrivals.setdefault(event_id, float(moment))
                self.times.append(float(moment))
                self._changed.notify_all()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, predicate, timeout: float) -> bool:
        """Wait until `predicate()` holds, checked whenever a request arrives."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def close(self) -> None:
        self.process.kill()
        self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_print_lock = threading.Lock()


def _report(body: bytes) -> None:
    """One line per request read in full: `<event id> <unix time>`."""
    try:
        event_id = json.loads(body).get("id", "-")
    except ValueError:
        event_id = "-"
    with _print_lock:
        sys.stdout.write(f"{event_id} {time.time():.6f}\n")
        sys.stdout.flush()


def serve(mode: str) -> None:
    """Run one receiver in MODE until killed (see the module's docstring)."""
    if mode == "silent":
        receiver = SilentReceiver(on_request=_report, backlog=512)
    elif mode == "fail":
        receiver = Receiver([(500, {}, b"")], on_request=_report)
    elif mode == "ok" or mode.startswith("delay:"):
        delay = float(mode.split(":", 1)[1]) if mode.startswith("delay:") else 0.0
        receiver = Receiver([(204, {}, b"")], delay=delay, on_request=_report)
    else:
        raise SystemExit(f"unknown mode {mode!r}: ok | delay:SECONDS | fail | silent")
    print(f"port {receiver.port}", flush=True)
    with receiver:
        threading.Event().wait()


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "ok")
