"""The scope catalogue: scopes a key may hold today, and those reserved for later families."""

from __future__ import annotations

from partner_api.errors import DomainError

IDENTITY_READ = "identity:read"
WEBHOOKS_MANAGE = "webhooks:manage"
GRANTABLE = (IDENTITY_READ, WEBHOOKS_MANAGE)
ALWAYS_GRANTED = (IDENTITY_READ,)
RESERVED = (
    "leads:read",
    "leads:write",
    "intakes:read",
    "intakes:write",
    "records:read",
    "records:write",
    "skills:read",
    "skills:author",
    "skills:execute",
    "agents:invoke",
    "tenants:provision",
)


def resolve_scopes(requested) -> list[str]:
    """The scopes a new key gets: the requested ones plus the always-granted ones, sorted.

    Raises DomainError `reserved_scope` or `unknown_scope`."""
    granted = set(ALWAYS_GRANTED)
    for scope in requested:
        if scope in RESERVED:
            raise DomainError(
                "reserved_scope",
                f"scope {scope!r} is reserved for a resource family that is not available yet; "
                f"grantable scopes: {', '.join(GRANTABLE)}",
            )
        if scope not in GRANTABLE:
            raise DomainError(
                "unknown_scope",
                f"unknown scope {scope!r}; grantable scopes: {', '.join(GRANTABLE)}",
            )
        granted.add(scope)
    return sorted(granted)
