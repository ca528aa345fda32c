"""Views of the identity resource."""

from flask import g

from partner_api import scopes
from partner_api.auth import require_scope
from partner_api.extensions import Blueprint, NoQuerySchema
from partner_api.identity.schemas import MeSchema
from partner_api.ratelimit import WINDOW_SECONDS

blp = Blueprint("identity", __name__, description="Who the calling API key is.")


@blp.get("/me")
@require_scope(scopes.IDENTITY_READ)
@blp.arguments(NoQuerySchema, location="query")
@blp.response(200, MeSchema)
@blp.errors(401, 403, 422, 429)
def get_me(_query):
    """Identity of the calling key, its scopes and rate-limit headroom"""
    key, state = g.api_key, g.rate_limit
    return {
        "org": key.org,
        "key": key,
        "scopes": key.scope_list,
        "rate_limit": {
            "limit": state.limit,
            "remaining": state.remaining,
            "reset": state.reset,
            "window": WINDOW_SECONDS,
        },
    }
