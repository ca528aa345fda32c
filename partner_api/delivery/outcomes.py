"""How a delivery attempt can end: `ok`, or one of the error kinds below. The transport
produces them; the failure audit stores them, and metrics, the OpenAPI schema and the docs
list them from here.
"""

from __future__ import annotations

import enum

OK = "ok"


class AttemptError(enum.StrEnum):
    """Why an attempt failed (stored as `error_kind`, shown as the attempt's `outcome`)."""

    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    DNS_ERROR = "dns_error"
    ADDRESS_BLOCKED = "address_blocked"
    HTTP_STATUS = "http_status"
    REDIRECT = "redirect"


def listed(separator: str = ", ", last: str = " or ") -> str:
    """The error kinds as prose: `http_status, redirect, … or address_blocked`."""
    kinds = [kind.value for kind in AttemptError]
    return separator.join(kinds[:-1]) + last + kinds[-1]
