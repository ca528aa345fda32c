"""Opaque, signed keyset cursors for the list endpoints (`limit` + `cursor`, newest first).

A cursor carries the last row's (time, id) and the list it belongs to, signed with a server
secret, so a tampered cursor or one taken from another list is refused with `invalid_cursor`.
"""

from __future__ import annotations

import datetime as dt
import functools

import marshmallow as ma
from itsdangerous import BadSignature, URLSafeSerializer

from partner_api import db
from partner_api.errors import DomainError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class ListQuerySchema(ma.Schema):
    limit = ma.fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=ma.validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Page size, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT})."},
    )
    # No load_default: a None default would document the parameter as `string | null`.
    cursor = ma.fields.String(
        metadata={"description": "`next_cursor` of the previous page; omit for the first page."},
    )


def page_schema(item_schema, name: str):
    """The list envelope `{data, has_more, next_cursor}` around `item_schema`."""
    return type(
        name,
        (ma.Schema,),
        {
            "data": ma.fields.List(ma.fields.Nested(item_schema)),
            "has_more": ma.fields.Boolean(),
            "next_cursor": ma.fields.String(allow_none=True),
        },
    )


@functools.cache
def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt="partner-api.list-cursor")


def _signer() -> URLSafeSerializer:
    return _serializer(db.app_secret("cursor_signing_key"))


def encode_cursor(list_name: str, moment: dt.datetime, row_id: str) -> str:
    return _signer().dumps([list_name, moment.isoformat(), row_id])


def decode_cursor(list_name: str, cursor: str) -> tuple[dt.datetime, str]:
    """The (time, id) a cursor points after; `invalid_cursor` unless it is ours for `list_name`."""
    try:
        cursor_list, moment, row_id = _signer().loads(cursor)
        if cursor_list != list_name:
            raise ValueError("cursor belongs to another list")
        return dt.datetime.fromisoformat(moment), str(row_id)
    except (BadSignature, ValueError, TypeError):
        raise DomainError(
            "invalid_cursor",
            "The cursor is malformed or not valid for this list.",
            field="cursor",
            location="query",
        )


def paginate(query, time_field, id_field, list_name: str, limit: int, cursor: str | None) -> dict:
    """One page of `query`, newest first, keyset on (time, id) so pages are stable."""
    if cursor:
        moment, row_id = decode_cursor(list_name, cursor)
        # `time <= moment` repeats what the OR implies, as a bound an index range scan can
        # start from: without it a deep page filters every newer row on the way down.
        query = query.where(
            (time_field <= moment)
            & ((time_field < moment) | ((time_field == moment) & (id_field < row_id)))
        )
    rows = list(query.order_by(time_field.desc(), id_field.desc()).limit(limit + 1))
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more:
        last = rows[-1]
        next_cursor = encode_cursor(
            list_name, getattr(last, time_field.name), getattr(last, id_field.name)
        )
    return {"data": rows, "has_more": has_more, "next_cursor": next_cursor}
