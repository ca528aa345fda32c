"""The private framework internals we rely on are listed once (docs/architecture.md, "Framework
internals we rely on"), each with the version it was checked against: this fails when a pin
moves without the list, or when an internal is gone or its signature changed."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import re
import sqlite3

import pytest

from partner_api.config import ROOT

DOC = ROOT / "docs" / "architecture.md"
HEADING = "## Framework internals we rely on"


def rows() -> list[dict]:
    section = DOC.read_text().split(HEADING, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")][2:]
    found = []
    for line in lines:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        package, version, internal, signature = cells[:4]
        found.append(
            {
                "package": package,
                "version": version,
                "internal": internal.strip("`"),
                "signature": signature.strip("`"),
            }
        )
    return found


def pins() -> dict[str, str]:
    text = (ROOT / "requirements.txt").read_text()
    return {m[1].lower(): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def resolve(dotted: str):
    """The object a dotted name points to: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise ImportError(dotted)


def _smorest_view_apidoc():
    import flask_smorest

    blp = flask_smorest.Blueprint("probe", __name__)

    @blp.response(200)
    def view():
        return {}

    return view._apidoc


def _pool_classes():
    import urllib3

    return urllib3.PoolManager().pool_classes_by_scheme


def _database_state():
    import peewee

    return peewee.SqliteDatabase(":memory:")._state.conn


def _blueprint_docs():
    import flask_smorest

    return flask_smorest.Blueprint("probe", __name__)._docs


def _lock_table_name():
    from yoyo import get_backend

    return get_backend("sqlite:///:memory:").lock_table_quoted


def _value_class_is_chosen_again():
    from prometheus_client import values

    return values.get_value_class() is not None and values.ValueClass is not None


def _srcfile_is_honoured():
    saved = logging._srcfile
    try:
        logging._srcfile = None
        record = logging.getLogger("probe").makeRecord(
            "probe", 20, "(unknown file)", 0, "", (), None
        )
        return record.pathname == "(unknown file)" and hasattr(logging, "_srcfile")
    finally:
        logging._srcfile = saved


# How each attribute row (no callable signature) is checked: by reading it where it lives.
ATTRIBUTES = {
    "urllib3.poolmanager.PoolManager.pool_classes_by_scheme": lambda: (
        set(_pool_classes()) == {"http", "https"}
    ),
    "peewee.Database._state": lambda: _database_state() is None,
    "flask_smorest.Blueprint._docs": lambda: isinstance(_blueprint_docs(), dict),
    "_apidoc": lambda: "response" in _smorest_view_apidoc(),
    "logging._srcfile": _srcfile_is_honoured,
    "sqlite3.adapters": lambda: isinstance(sqlite3.adapters, dict),
    "prometheus_client.values.ValueClass": _value_class_is_chosen_again,
    "yoyo.backends.base.DatabaseBackend.lock_table_quoted": lambda: (
        "yoyo_lock" in _lock_table_name()
    ),
}
STANDARD_LIBRARY = {"logging", "sqlite3"}  # their rows are checked by behaviour alone


def test_the_list_is_there_and_covers_every_library_we_hook():
    listed = rows()
    assert {row["package"] for row in listed} == {
        "urllib3",
        "peewee",
        "flask-smorest",
        "prometheus-client",
        "yoyo-migrations",
        *STANDARD_LIBRARY,
    }
    assert {r["internal"] for r in listed if r["signature"] == "attribute"} == set(ATTRIBUTES)


@pytest.mark.parametrize("row", rows(), ids=lambda row: row["internal"])
def test_each_internal_is_still_what_the_code_relies_on(row):
    if row["package"] not in STANDARD_LIBRARY:
        assert row["version"] == pins()[row["package"]], "the pin moved: read this row again"
        assert importlib.metadata.version(row["package"]) == row["version"]
    if row["signature"] == "attribute":
        assert ATTRIBUTES[row["internal"]]()
    else:
        found = resolve(row["internal"])
        signature = str(inspect.signature(found))
        plain = re.sub(r": '[^']*'|: [\w.| \[\]]+|-> .*$", "", signature).replace(" = ", "=")
        assert plain.strip() == row["signature"], signature
