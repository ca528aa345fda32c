"""Injectable DNS for the webhook URL checks and the dispatcher's connections."""

from __future__ import annotations

import socket
import threading

# A name mapped to this never answers: the lookup blocks, like a DNS server that drops queries.
HANG = "hang"


class FakeResolver:
    """A mutable name → addresses table (`table`); other names fail like NXDOMAIN, a name
    mapped to an exception raises it, and one mapped to HANG never answers. Records every call
    as (host, port) in `calls`."""

    def __init__(self, table=None):
        self.table = dict(table or {})
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        answer = self.table.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if isinstance(answer, BaseException):
            raise answer
        if answer == HANG:
            threading.Event().wait()
        return list(answer)
