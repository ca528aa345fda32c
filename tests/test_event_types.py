"""GET /event-types: the catalogue, as declared in delivery/event_types.py, for any valid key."""

from __future__ import annotations

import pytest

from partner_api.delivery.event_types import EVENT_TYPES

from .conftest import assert_problem, bearer

EVENT_TYPES_PATH = "/api/v1/partner/event-types"


@pytest.mark.parametrize("scopes", [(), ("webhooks:manage",)], ids=["no-scope", "manage"])
def test_any_valid_key_reads_the_catalogue(client, make_key, scopes):
    token = make_key(scopes=scopes).token
    response = client.get(EVENT_TYPES_PATH, headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json() == {
        "data": [{"name": name, "description": EVENT_TYPES[name]} for name in sorted(EVENT_TYPES)]
    }
    assert response.headers["X-RateLimit-Limit"] == "600"


def test_the_catalogue_is_the_declared_table_sorted_by_name(client, make_key, monkeypatch):
    monkeypatch.setitem(EVENT_TYPES, "vc.a.first", "Sorts first.")
    monkeypatch.setitem(EVENT_TYPES, "vc.z.last", "Sorts last.")
    token = make_key().token
    data = client.get(EVENT_TYPES_PATH, headers=bearer(token)).get_json()["data"]
    names = [item["name"] for item in data]
    assert names == sorted(EVENT_TYPES) and names[0] == "vc.a.first" and "vc.test.ping" in names
    assert {"name": "vc.z.last", "description": "Sorts last."} in data


def test_the_catalogue_needs_a_valid_key(client, make_key):
    assert_problem(client.get(EVENT_TYPES_PATH), 401, "authentication_required")
    invalid = client.get(EVENT_TYPES_PATH, headers=bearer("pk_live_nope"))
    assert_problem(invalid, 401, "invalid_token")


def test_an_unknown_query_parameter_on_the_catalogue_is_422(client, make_key):
    token = make_key().token
    response = client.get(EVENT_TYPES_PATH + "?type=vc", headers=bearer(token))
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"] == [{"location": "query", "field": "type", "message": "Unknown field."}]
