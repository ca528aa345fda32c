"""Local HTTP receivers for delivery tests: record what arrives, answer as scripted."""

from __future__ import annotations

import http.server
import socket
import threading
import time


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records requests and answers from a script.

    `responses` is a list of (status, headers, body) used in order; the last one repeats.
    `port`: 0 for any free one, or the port a stored URL names (OSError when it is taken).
    """

    def __init__(self, responses=((200, {}, b"ok"),), delay: float = 0.0, port: int = 0):
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

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
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


class SilentReceiver:
    """Accepts connections and reads the requests, then never answers (a dead endpoint that
    still completes the TCP handshake). Counts the requests it has read."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.requests = 0
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
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
        except OSError:
            return
        with self._lock:
            self.requests += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._closed.set()
        self.listener.close()
        with self._lock:
            for conn in self._held:
                conn.close()
