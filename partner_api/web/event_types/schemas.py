"""Schemas of the event catalogue."""

import marshmallow as ma


class EventTypeSchema(ma.Schema):
    name = ma.fields.String(metadata={"example": "vc.test.ping"})
    description = ma.fields.String(
        metadata={"example": "A test event sent on request by POST /webhooks/{id}/test."}
    )


class EventTypeListSchema(ma.Schema):
    data = ma.fields.List(
        ma.fields.Nested(EventTypeSchema),
        metadata={"description": "Every event type, sorted by name."},
    )
