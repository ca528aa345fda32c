"""Prefixed, random, unguessable identifiers (`org_…`, `key_…`, `wh_…`, `evt_…`, …).

128 bits of randomness in lowercase base32, so ids are URL-safe and case-insensitive to read.
"""

import base64
import re
import secrets

_ID = re.compile(r"^[a-z]+_[a-z2-7]{26}$")


def new_id(prefix: str) -> str:
    """A new id such as `org_5x2…`: prefix, underscore, 26 base32 characters."""
    raw = base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
    return f"{prefix}_{raw}"


def looks_like(prefix: str, value: str) -> bool:
    """Whether `value` has the shape of an id with this prefix (no database lookup)."""
    return isinstance(value, str) and value.startswith(prefix + "_") and bool(_ID.match(value))
