"""Name resolution for webhook hosts: the system resolver and a deadline on any lookup.

getaddrinfo cannot be interrupted, so a deadline runs the lookup in a daemon thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

Resolver = Callable[[str, int], list[str]]


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
