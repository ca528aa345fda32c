"""Schemas of the identity resource."""

import marshmallow as ma

from partner_api.web.fields import Timestamp


class OrgSchema(ma.Schema):
    id = ma.fields.String(metadata={"example": "org_5x2c7qkq3w6yq4n2m7hb5r3v2e"})
    name = ma.fields.String(metadata={"example": "Acme Logistics"})


class KeySchema(ma.Schema):
    id = ma.fields.String(metadata={"example": "key_q4n2m7hb5r3v2e5x2c7qkq3w6y"})
    name = ma.fields.String(metadata={"example": "production"})
    prefix = ma.fields.String(metadata={"example": "vc_4fG7aQ2z"})
    created_at = Timestamp()
    last_used_at = Timestamp(allow_none=True)


class RateLimitSchema(ma.Schema):
    limit = ma.fields.Integer(metadata={"description": "Requests allowed per window."})
    remaining = ma.fields.Integer(metadata={"description": "Requests left in this window."})
    reset = ma.fields.Integer(metadata={"description": "Unix seconds when the window resets."})
    window = ma.fields.Integer(metadata={"description": "Window length in seconds."})


class MeSchema(ma.Schema):
    org = ma.fields.Nested(OrgSchema)
    key = ma.fields.Nested(KeySchema)
    scopes = ma.fields.List(ma.fields.String(), metadata={"example": ["identity:read"]})
    rate_limit = ma.fields.Nested(RateLimitSchema)
