"""A webhook receiver in its own process, for benchmarks and process-level tests.

Usage: python bench/receiver_process.py MODE   (MODE: ok | delay:SECONDS | silent)

Prints `port N` once listening, then `<event id> <unix time>` for every request it read in full.
`ok` answers 204 at once, `delay:S` after S seconds, `silent` reads the request and never answers.
"""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
import time

_print_lock = threading.Lock()


def _report(body: bytes) -> None:
    try:
        event_id = json.loads(body).get("id", "-")
    except ValueError:
        event_id = "-"
    with _print_lock:
        sys.stdout.write(f"{event_id} {time.time():.6f}\n")
        sys.stdout.flush()


def _http_server(delay: float) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 (http.server naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            _report(body)
            if delay:
                time.sleep(delay)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 128
    return server


def _serve_silently(listener: socket.socket) -> None:
    """Accept, read the request, then hold the connection open without a word."""
    held = []

    def hold(conn: socket.socket) -> None:
        conn.settimeout(None)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        _report(body)
        while conn.recv(65536):  # silent until the sender gives up
            pass

    while True:
        conn, _ = listener.accept()
        held.append(conn)
        threading.Thread(target=hold, args=(conn,), daemon=True).start()


def main(mode: str) -> None:
    if mode == "silent":
        listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        print(f"port {listener.getsockname()[1]}", flush=True)
        _serve_silently(listener)
        return
    delay = float(mode.split(":", 1)[1]) if mode.startswith("delay:") else 0.0
    server = _http_server(delay)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ok")
