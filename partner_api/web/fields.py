"""Marshmallow fields shared by the API schemas and the admin CLI's JSON output.

One timestamp field, so every stored time leaves as the same RFC 3339 UTC text.
"""

import marshmallow as ma

from partner_api import clock


class Timestamp(ma.fields.DateTime):
    """A stored naive-UTC datetime as RFC 3339 text (`2026-01-02T03:04:05.678Z`); OpenAPI
    documents it as `string` / `date-time`."""

    def _serialize(self, value, attr, obj, **kwargs):
        return clock.isoformat(value)
