"""`DomainError`: a work function's refusal, with a stable `code`. The web layer
(`web/problems.py`) and the admin CLI each translate it at their edge.
"""

from __future__ import annotations


class DomainError(Exception):
    """A refusal by a work function: a stable `code` and a human `message`.

    Work functions raise it and know nothing of HTTP; the API renders it with the status that
    `STATUS_BY_CODE` gives its code, the admin CLI as one `error: …` line with exit status 2.
    `field` names the offending input (`location` says where: json, query or path);
    `retry_after`, the seconds after which the same request may succeed (a refusal for being
    busy, not for the input).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field=None,
        location: str = "json",
        retry_after: int | None = None,
        **extra,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.location = location
        self.retry_after = retry_after
        self.extra = extra

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable with its code (errors cross process pools in tests)
        return (type(self), (self.code, self.message))
