"""Operator provisioning: orgs and API keys (there is no UI; the admin CLI calls these).

Every function validates everything before writing, so a refusal changes nothing.
"""

from __future__ import annotations

from partner_api import clock, ids, scopes, tokens
from partner_api.db import write_transaction
from partner_api.errors import DomainError
from partner_api.models import ApiKey, Org

MAX_RATE_LIMIT = 1_000_000


def _clean_name(value: str, what: str, default: str = "") -> str:
    """A trimmed, printable UTF-8 name of 1-200 characters."""
    name = (value or "").strip() or default
    if not name or len(name) > 200:
        raise DomainError("invalid_name", f"{what} name must be 1-200 characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DomainError("invalid_name", f"{what} name must be valid UTF-8 text") from None
    if not name.isprintable():
        raise DomainError("invalid_name", f"{what} name must not contain control characters")
    return name


def create_org(name: str) -> Org:
    """A new org with a non-empty name."""
    return Org.create(id=ids.new_id("org"), name=_clean_name(name, "org"), created_at=clock.now())


def list_orgs() -> list[Org]:
    return list(Org.select().order_by(Org.created_at, Org.id))


def create_key(org_id: str, name: str = "", requested_scopes=(), rate_limit: int | None = None):
    """A new key for an org; returns (key, token). The token exists only in this return value."""
    granted = scopes.resolve_scopes(requested_scopes)  # raises before anything is written
    if rate_limit is not None and not 1 <= rate_limit <= MAX_RATE_LIMIT:
        raise DomainError(
            "invalid_rate_limit", f"rate limit must be from 1 to {MAX_RATE_LIMIT} per minute"
        )
    name = _clean_name(name, "key", default="default")
    org = Org.get_or_none(Org.id == org_id)
    if org is None:
        raise DomainError("org_not_found", f"no org with id {org_id!r}")
    token = tokens.new_token()
    key = ApiKey.create(
        id=ids.new_id("key"),
        org=org,
        name=name,
        prefix=tokens.display_prefix(token),
        token_hash=tokens.hash_token(token),
        scopes=" ".join(granted),
        rate_limit=rate_limit,
        created_at=clock.now(),
    )
    return key, token


def list_keys(org_id: str | None = None) -> list[ApiKey]:
    query = ApiKey.select().order_by(ApiKey.created_at, ApiKey.id)
    if org_id is not None:
        query = query.where(ApiKey.org == org_id)
    return list(query)


def revoke_key(key_id: str) -> ApiKey:
    """Revoke a key; it fails authentication on the very next request, in every worker."""
    with write_transaction():
        key = ApiKey.get_or_none(ApiKey.id == key_id)
        if key is None:
            raise DomainError("key_not_found", f"no key with id {key_id!r}")
        if key.revoked_at is None:
            key.revoked_at = clock.now()
            key.save(only=[ApiKey.revoked_at])
    return key
