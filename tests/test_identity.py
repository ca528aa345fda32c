"""GET /me, authentication, scopes, rate limiting and the error shape."""

import pytest

from partner_api import clock as clock_module
from partner_api import tokens
from partner_api.db import database
from partner_api.models import ApiKey, RateLimitWindow
from partner_api.web.auth import find_caller
from partner_api.web.identity.resources import describe_caller
from partner_api.web.identity.schemas import MeSchema
from partner_api.web.ratelimit import RateLimitState

from .conftest import assert_problem, bearer

ME = "/api/v1/partner/me"


def test_me_returns_org_key_scopes_and_headroom(client, make_key, clock):
    org, key, token = make_key(scopes=["webhooks:manage"], rate_limit=5)
    response = client.get(ME, headers=bearer(token))
    assert response.status_code == 200
    body = response.get_json()
    assert body["org"] == {"id": org.id, "name": "Acme"}
    assert body["key"]["id"] == key.id and body["key"]["prefix"] == token[:11]
    assert body["key"]["created_at"].endswith("Z")
    assert body["key"]["last_used_at"] == clock_module.isoformat(clock.current)
    assert body["scopes"] == ["identity:read", "webhooks:manage"]
    assert body["rate_limit"] == {
        "limit": 5,
        "remaining": 4,
        "reset": clock_module.unix() + 30,
        "window": 60,
    }
    assert response.headers["X-RateLimit-Limit"] == "5"
    assert response.headers["X-RateLimit-Remaining"] == "4"
    assert response.headers["X-RateLimit-Reset"] == str(body["rate_limit"]["reset"])
    assert token not in response.get_data(as_text=True)


def test_missing_authorization_is_401_with_challenge(client):
    body = assert_problem(client.get(ME), 401, "authentication_required")
    assert "Bearer" in body["detail"]
    assert client.get(ME).headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("template", ["bearer {token}", "Bearer   {token}", " \tBearer {token}\t "])
def test_header_grammar_allows_any_scheme_case_and_plain_spaces(client, make_key, template):
    _, _, token = make_key()
    response = client.get(ME, headers={"Authorization": template.format(token=token)})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwdw==",
        "Bearer vc_short",
        "Token {good}",
        "Bearer {bad_checksum}",
        "Bearer {good}x",
        # Only SP separates scheme and token, and only SP/HTAB surround the value: no
        # Unicode whitespace (NBSP, NEL) is stripped, and nothing else may follow.
        "Bearer\xa0{good}",
        "Bearer\x85{good}",
        "Bearer\t{good}",
        "Bearer {good}\xa0",
        "Bearer {good}\x85",
        "\xa0Bearer {good}",
        "Bearer {good} extra",
        "Bearer {good},",
    ],
)
def test_malformed_tokens_are_401_without_lookup(client, make_key, header, monkeypatch):
    _, key, token = make_key()
    bad_checksum = token[:-1] + ("A" if token[-1] != "A" else "B")

    def no_lookup(*args, **kwargs):
        raise AssertionError("a malformed token reached the database")

    monkeypatch.setattr("partner_api.web.auth.find_caller", no_lookup)
    response = client.get(
        ME, headers={"Authorization": header.format(good=token, bad_checksum=bad_checksum)}
    )
    assert_problem(response, 401, "invalid_token")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert "X-RateLimit-Limit" not in response.headers
    monkeypatch.undo()
    assert_nothing_written(key)


def assert_nothing_written(key):
    with database.connection_context():
        assert RateLimitWindow.select().count() == 0
        assert ApiKey.get_by_id(key.id).last_used_at is None


def test_unknown_well_formed_token_is_401_and_writes_nothing(client, make_key):
    _, key, _ = make_key()
    assert_problem(client.get(ME, headers=bearer(tokens.new_token())), 401, "invalid_token")
    assert_nothing_written(key)


def test_revoked_key_is_401_on_the_next_request(client, make_key, db):
    _, key, token = make_key()
    assert client.get(ME, headers=bearer(token)).status_code == 200
    from partner_api.provisioning import revoke_key

    revoke_key(key.id)
    hits = RateLimitWindow.get_by_id(key.id).hits
    assert_problem(client.get(ME, headers=bearer(token)), 401, "invalid_token")
    assert RateLimitWindow.get_by_id(key.id).hits == hits


def test_key_without_scope_is_403_naming_the_scope(client, make_key):
    token = make_key(scopes=[]).token
    response = client.get("/api/v1/partner/webhooks", headers=bearer(token))
    body = assert_problem(response, 403, "insufficient_scope")
    assert body["required_scope"] == "webhooks:manage"
    assert "webhooks:manage" in body["detail"]
    assert response.headers["X-RateLimit-Limit"] == "600"


def test_rate_limit_admits_exactly_the_limit_then_429(client, make_key, clock):
    token = make_key(rate_limit=3).token
    statuses = [client.get(ME, headers=bearer(token)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    response = client.get(ME, headers=bearer(token))
    assert_problem(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "30"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    clock.advance(30)
    assert client.get(ME, headers=bearer(token)).status_code == 200


def test_default_rate_limit_applies_without_override(client, make_key):
    token = make_key().token
    assert client.get(ME, headers=bearer(token)).headers["X-RateLimit-Limit"] == "600"


def test_last_used_at_is_written_only_when_stale(client, make_key, clock, db):
    _, key, token = make_key()
    client.get(ME, headers=bearer(token))
    first = ApiKey.get_by_id(key.id).last_used_at
    assert first == clock.current
    clock.advance(20)
    client.get(ME, headers=bearer(token))
    assert ApiKey.get_by_id(key.id).last_used_at == first
    clock.advance(45)
    client.get(ME, headers=bearer(token))
    assert ApiKey.get_by_id(key.id).last_used_at == clock.current


def test_unknown_query_parameter_is_422_naming_the_parameter(client, make_key):
    token = make_key().token
    body = assert_problem(
        client.get(ME + "?expand=all", headers=bearer(token)), 422, "validation_error"
    )
    assert body["errors"] == [{"location": "query", "field": "expand", "message": "Unknown field."}]


def test_unknown_route_is_404_problem(client):
    assert_problem(client.get("/api/v1/partner/nope"), 404, "not_found")
    assert_problem(client.get("/"), 404, "not_found")


def test_wrong_method_is_405_problem(client, make_key):
    response = client.post(ME, json={})
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_unexpected_exception_is_500_without_internals(app, make_key, monkeypatch):
    token = make_key().token

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr("partner_api.web.ratelimit.state", explode)
    response = app.test_client().get(ME, headers=bearer(token))
    body = assert_problem(response, 500, "internal_error")
    assert "secret internal detail" not in response.get_data(as_text=True)
    assert body["detail"] == "An unexpected error occurred."


def test_rate_limit_windows_are_per_key(client, make_key, db):
    _, key_a, token_a = make_key(rate_limit=1)
    _, key_b, token_b = make_key(rate_limit=1, org_name="Other")
    assert client.get(ME, headers=bearer(token_a)).status_code == 200
    assert client.get(ME, headers=bearer(token_b)).status_code == 200
    assert client.get(ME, headers=bearer(token_a)).status_code == 429
    assert RateLimitWindow.select().count() == 2


def test_refusals_in_an_exhausted_window_are_answered_without_a_write(client, make_key, clock, db):
    _, key, token = make_key(rate_limit=2)
    statuses = [client.get(ME, headers=bearer(token)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert RateLimitWindow.get_by_id(key.id).hits == 3  # the request that ran over counts
    for _ in range(3):
        response = client.get(ME, headers=bearer(token))
        assert_problem(response, 429, "rate_limited")
        assert response.headers["X-RateLimit-Remaining"] == "0"
    assert RateLimitWindow.get_by_id(key.id).hits == 3  # the window was known exhausted
    clock.advance(30)
    assert client.get(ME, headers=bearer(token)).status_code == 200
    assert RateLimitWindow.get_by_id(key.id).hits == 1


def test_me_body_is_exactly_what_its_documented_schema_gives(client, make_key, clock):
    _, key, token = make_key(rate_limit=5)
    body = client.get(ME, headers=bearer(token)).get_json()
    with database.connection_context():
        key = ApiKey.get_by_id(key.id)
        caller = find_caller(key.token_hash, body["rate_limit"]["reset"] - 60, 1000)
    state = RateLimitState(limit=5, remaining=4, reset=body["rate_limit"]["reset"], allowed=True)
    rate_limit = {**vars(state), "window": 60}
    by_schema = MeSchema().dump(
        {"org": key.org, "key": key, "scopes": key.scope_list, "rate_limit": rate_limit}
    )
    assert body == by_schema == describe_caller(caller, state)
