"""One webhook attempt: an HTTP client pinned to SSRF-checked addresses, bounded by one deadline.

Owns the requests/urllib3 setup (no proxies, no redirects, capped answers) and the outcome mapping.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import http.cookiejar
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import certifi
import requests
import urllib3.exceptions as u3exc
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from partner_api import __version__
from partner_api.delivery.dns import call_with_deadline
from partner_api.delivery.outcomes import AttemptError
from partner_api.delivery.ssrf import SsrfPolicy, resolve_allowed_addresses
from partner_api.delivery.webhook_url import WebhookUrlError, parse_webhook_url

VERSION = __version__
USER_AGENT = f"PartnerAPI-Webhooks/{VERSION}"
MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_BYTES = 1024
_CHUNK_BYTES = 16 * 1024
_MAX_MESSAGE = 500
_REFUSAL_KINDS = {
    "address_not_allowed": AttemptError.ADDRESS_BLOCKED,
    "host_unresolvable": AttemptError.DNS_ERROR,
}

# The connection pools call back into the attempt of the thread that is inside send().
_local = threading.local()


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status_code: int | None
    error_kind: str | None
    error_message: str | None
    response_excerpt: str | None
    duration_ms: int


class _Attempt:
    """State of one send() call, shared by the sending thread, its connection and its watchdog."""

    def __init__(self, policy: SsrfPolicy, timeout: float):
        self.policy = policy
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.status: int | None = None
        self.body = bytearray()
        self.refusal: WebhookUrlError | None = None
        self.dns_timed_out = False
        self.expired = False
        self._finished = False
        self._conns: list[_PinnedMixin] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def attach(self, conn: _PinnedMixin) -> None:
        # Own the connection before listing it, so expire() can never skip it.
        with conn._guard:
            conn._attempt = self
        with self._lock:
            self._conns.append(conn)
            expired = self.expired
        if expired:
            conn._interrupt(self)

    def expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            conns = list(self._conns)
        for conn in conns:
            conn._interrupt(self)

    def finish(self) -> bool:
        """Stop the watchdog from acting; True if the deadline had already struck."""
        with self._lock:
            self._finished = True
            return self.expired


class _Watchdog:
    """One thread that expires attempts at their deadlines (a timer thread per attempt would
    cost a thread start on every delivery)."""

    def __init__(self):
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._wake = threading.Condition()
        self._count = 0
        self._thread: threading.Thread | None = None

    def watch(self, attempt: _Attempt) -> None:
        with self._wake:
            self._count += 1
            heapq.heappush(self._heap, (attempt.deadline, self._count, attempt))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                _, _, attempt = heapq.heappop(self._heap)
            attempt.expire()  # a no-op for an attempt that already finished


class _PinnedMixin:
    """Connects only to addresses the SSRF policy approved, resolved at connect time.

    Host header, SNI and certificate checks keep using self.host, since only the socket is pinned.
    """

    def __init__(self, *args, **kwargs):
        self._guard = threading.Lock()
        self._attempt: _Attempt | None = None
        self._watch_sock: socket.socket | None = None
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        attempt = getattr(_local, "attempt", None)
        if attempt is None:  # fail closed: there is no policy to check against
            raise u3exc.NewConnectionError(self, "Webhook connections open only inside send()")
        addresses = self._resolve(attempt)
        sock = self._connect_first(addresses, attempt)
        # A dup shares the TCP connection, and survives the TLS wrap that detaches `sock`.
        with self._guard:
            self._watch_sock = sock.dup()
        if attempt.expired:
            sock.close()
            raise u3exc.ConnectTimeoutError(self, "Deadline reached while connecting")
        return sock

    def _resolve(self, attempt: _Attempt) -> list:
        try:
            return call_with_deadline(
                attempt.remaining(), resolve_allowed_addresses, self.host, self.port, attempt.policy
            )
        except TimeoutError:
            attempt.dns_timed_out = True
            raise u3exc.ConnectTimeoutError(self, "DNS resolution exceeded the deadline") from None
        except WebhookUrlError as error:
            attempt.refusal = error
            raise u3exc.NewConnectionError(self, f"Refused by SSRF policy ({error.code})") from None
        except Exception as error:
            raise u3exc.NewConnectionError(self, "Resolution failed") from error

    def _connect_first(self, addresses: list, attempt: _Attempt) -> socket.socket:
        error: OSError | None = None
        for address in addresses:
            remaining = attempt.remaining()
            if remaining <= 0:
                break
            if isinstance(self.timeout, (int, float)):
                remaining = min(remaining, self.timeout)
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(remaining)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect((str(address), self.port))
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        if error is None or isinstance(error, TimeoutError):
            raise u3exc.ConnectTimeoutError(self, "Connection timed out") from error
        raise u3exc.NewConnectionError(self, f"Failed to connect: {error}") from error

    def _interrupt(self, attempt: _Attempt) -> None:
        # Only while this attempt still owns the connection: once pooled it may serve another.
        with self._guard:
            if self._attempt is attempt and self._watch_sock is not None:
                with contextlib.suppress(OSError):  # already closed: nothing left to cut
                    self._watch_sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._guard:
            watch, self._watch_sock = self._watch_sock, None
        if watch is not None:
            watch.close()
        super().close()


class _PinnedHTTPConnection(_PinnedMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedMixin, HTTPSConnection):
    pass


class _AttemptPoolMixin:
    """Hands each checked-out connection to the current attempt, and takes it back on return."""

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        attempt = getattr(_local, "attempt", None)
        if attempt is not None:
            attempt.attach(conn)
        return conn

    def _put_conn(self, conn) -> None:
        if conn is not None:
            with conn._guard:
                attempt, conn._attempt = conn._attempt, None
            if attempt is not None and attempt.expired:
                conn.close()  # its socket may have been shut down by the watchdog
        super()._put_conn(conn)


class _PinnedHTTPPool(_AttemptPoolMixin, HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(_AttemptPoolMixin, HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


def _trust_store(ca_bundle: str | None) -> ssl.SSLContext:
    """The system store and requests' CA bundle, plus PARTNER_API_CA_BUNDLE's extra CAs."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class _PinnedAdapter(HTTPAdapter):
    def __init__(self, ssl_context: ssl.SSLContext, **kwargs):
        self._ssl_context = ssl_context
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, ssl_params = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        ssl_params["ssl_context"] = self._ssl_context
        return host_params, ssl_params

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PinnedHTTPPool,
            "https": _PinnedHTTPSPool,
        }

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # A proxy would connect on our behalf, to addresses this module never checked.
        raise requests.exceptions.InvalidProxyURL("Webhooks are never sent through a proxy")


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    # The session is shared by all subscriptions; a cookie set for one must not reach another.
    def set_ok(self, cookie, request) -> bool:
        return False

    def return_ok(self, cookie, request) -> bool:
        return False


class _WebhookSession(requests.Session):
    def get_redirect_target(self, resp):
        # Even with allow_redirects=False, requests reads a 3xx body in full (uncapped) to
        # prepare Response.next; we never follow redirects, so there is no target.
        return None


class WebhookTransport:
    """Posts webhook attempts; one instance is shared by the dispatcher's worker threads."""

    def __init__(
        self,
        policy: SsrfPolicy,
        *,
        timeout: float = 10.0,
        ca_bundle: str | None = None,
        pool_maxsize: int = 10,
    ):
        self._policy = policy
        self._timeout = timeout
        session = _WebhookSession()
        session.trust_env = False
        session.cookies.set_policy(_NoCookies())
        # Identity encoding keeps the byte cap a cap on what the receiver sends.
        session.headers["Accept-Encoding"] = "identity"
        adapter = _PinnedAdapter(_trust_store(ca_bundle), pool_maxsize=pool_maxsize, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        self._watchdog = _Watchdog()
        # Parsed once per URL: the policy is fixed for the transport's life, and this ran on
        # every attempt.
        self._parse = functools.lru_cache(maxsize=4096)(
            lambda url: parse_webhook_url(url, self._policy)
        )

    def send(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        """POST once within the deadline; never raises. A resolver still busy at the deadline
        counts as 'timeout' (not 'dns_error', which means the name does not resolve)."""
        attempt = _Attempt(self._policy, self._timeout)
        failure: Exception | None = None
        _local.attempt = attempt
        try:
            self._watchdog.watch(attempt)
            self._exchange(url, body, headers, attempt)
        except Exception as exc:  # send() reports every failure as a result, never raises
            failure = exc
        finally:
            _local.attempt = None
        expired = attempt.finish()
        if failure is not None or expired:
            kind, message = _classify(failure, attempt, expired, self._timeout)
        else:
            kind, message = _status_outcome(attempt.status)
        # NUL cannot be stored in a PostgreSQL text column; the excerpt is for humans anyway.
        excerpt = (
            bytes(attempt.body[:EXCERPT_BYTES])
            .decode("utf-8", errors="replace")
            .replace("\x00", "\ufffd")
        )
        return AttemptResult(
            ok=kind is None,
            status_code=attempt.status,
            error_kind=kind,
            error_message=message[:_MAX_MESSAGE] if message else None,
            response_excerpt=excerpt or None,
            duration_ms=int((time.monotonic() - attempt.started) * 1000),
        )

    def _exchange(self, url: str, body: bytes, headers: dict[str, str], attempt: _Attempt):
        target = self._parse(url)  # defence in depth: checked at create time
        headers = {**headers, "User-Agent": USER_AGENT, "Content-Type": "application/json"}
        resp = self._session.post(
            target.url,
            data=body,
            headers=headers,
            allow_redirects=False,
            stream=True,
            verify=True,
            # Per socket operation; the watchdog enforces the total.
            timeout=max(attempt.remaining(), 0.001),
        )
        try:
            attempt.status = resp.status_code
            while len(attempt.body) < MAX_RESPONSE_BYTES:
                want = min(_CHUNK_BYTES, MAX_RESPONSE_BYTES - len(attempt.body))
                chunk = resp.raw.read(want, decode_content=False)
                if not chunk:
                    break
                attempt.body += chunk
        finally:
            # A body read to its end already returned the connection to the pool; otherwise
            # this closes it instead of draining an answer of unbounded size.
            resp.close()

    def close(self) -> None:
        self._session.close()


def _status_outcome(status: int | None) -> tuple[str | None, str | None]:
    if status is not None and 200 <= status < 300:
        return None, None
    if status is not None and 300 <= status < 400:
        return AttemptError.REDIRECT, f"Receiver answered HTTP {status}; redirects are not followed"
    return AttemptError.HTTP_STATUS, f"Receiver answered HTTP {status}"


def _classify(
    exc: BaseException | None, attempt: _Attempt, expired: bool, timeout: float
) -> tuple[str, str]:
    refusal = exc if isinstance(exc, WebhookUrlError) else attempt.refusal
    if refusal is not None:
        kind = _REFUSAL_KINDS.get(refusal.code, AttemptError.CONNECTION_ERROR)
        return kind, f"{refusal.message} ({refusal.code})"
    if attempt.dns_timed_out:
        return (
            AttemptError.TIMEOUT,
            f"DNS resolution did not finish within the {timeout:g} s deadline",
        )
    if expired or isinstance(exc, (requests.Timeout, u3exc.ReadTimeoutError, TimeoutError)):
        return AttemptError.TIMEOUT, f"No complete answer within the {timeout:g} s deadline"
    chain = _exception_chain(exc)
    if isinstance(exc, requests.exceptions.SSLError) or any(
        isinstance(e, (ssl.SSLError, ssl.CertificateError, u3exc.SSLError)) for e in chain
    ):
        return (
            AttemptError.TLS_ERROR,
            f"TLS handshake or certificate check failed: {_tls_reason(chain)}",
        )
    if isinstance(exc, (requests.ConnectionError, u3exc.HTTPError, OSError)):
        return AttemptError.CONNECTION_ERROR, f"Connection failed: {_root_reason(chain)}"
    # Only the type: messages of unexpected errors may quote header values or URLs.
    return AttemptError.CONNECTION_ERROR, f"Unexpected error while sending: {type(exc).__name__}"


def _exception_chain(exc: BaseException | None) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        nested = getattr(exc, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in exc.args if isinstance(a, BaseException)), None)
        exc = nested or exc.__cause__ or exc.__context__
    return chain


def _tls_reason(chain: list[BaseException]) -> str:
    for exc in reversed(chain):
        if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
            return exc.verify_message
        if isinstance(exc, ssl.SSLError) and exc.reason:
            return str(exc.reason)
    return type(chain[-1]).__name__


def _root_reason(chain: list[BaseException]) -> str:
    # The library wrappers' messages quote the request URL, which may carry secrets.
    root = chain[-1]
    if isinstance(root, OSError) and root.strerror:
        return root.strerror
    return type(root).__name__
