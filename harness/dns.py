"""Injectable DNS for the webhook URL checks and the dispatcher's connections."""

from __future__ import annotations

import socket


class FakeResolver:
    """A mutable name → addresses table (`table`); other names fail like NXDOMAIN, and a name
    mapped to an exception raises it. Records every call as (host, port) in `calls`."""

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
        return list(answer)
