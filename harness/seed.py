"""Databases to run a server on: a fresh SQLite file with one org and one key."""

from __future__ import annotations

from pathlib import Path

from partner_api import provisioning
from partner_api.db import apply_schema, bind, database


def sqlite_with_key(path: Path, org_name: str = "Acme") -> tuple[str, str]:
    """A fresh SQLite database at `path` with one org and a `webhooks:manage` key; returns
    (DATABASE_URL, the key's token)."""
    url = f"sqlite:///{path}"
    bind(url)
    apply_schema()
    with database.connection_context():
        org = provisioning.create_org(org_name)
        _, token = provisioning.create_key(org.id, "test", ["webhooks:manage"], None)
    return url, token
