"""The published OpenAPI 3.1 document and the interactive docs."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest
from openapi_spec_validator import validate

from partner_api import ids
from partner_api.models import DeliveryStatus

PREFIX = "/api/v1/partner"
OPENAPI = f"{PREFIX}/openapi.json"
PROBLEM = "application/problem+json"
EXPECTED_OPERATIONS = {
    f"{PREFIX}/me": {"get"},
    f"{PREFIX}/webhooks": {"get", "post"},
    f"{PREFIX}/webhooks/{{subscription_id}}": {"get", "patch", "delete"},
    f"{PREFIX}/webhooks/{{subscription_id}}/test": {"post"},
    f"{PREFIX}/webhooks/{{subscription_id}}/failures": {"get"},
    f"{PREFIX}/event-types": {"get"},
    f"{PREFIX}/webhooks/{{subscription_id}}/deliveries": {"get"},
    f"{PREFIX}/webhooks/{{subscription_id}}/deliveries/{{delivery_id}}": {"get"},
    f"{PREFIX}/webhooks/{{subscription_id}}/deliveries/{{delivery_id}}/redeliver": {"post"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def spec(client):
    response = client.get(OPENAPI)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def resolve(spec: dict, node: dict) -> dict:
    """Follow local `$ref`s (e.g. into components.responses) until a real object."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def test_openapi_document_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    assert spec["info"]["title"] == "Partner API" and spec["info"]["version"]


def test_paths_are_exactly_the_v1_surface(spec):
    found = {}
    for path, method, _ in operations(spec):
        found.setdefault(path, set()).add(method)
    assert found == EXPECTED_OPERATIONS


def test_bearer_security_scheme_covers_every_operation(spec):
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path, method, operation in operations(spec):
        security = operation.get("security", spec.get("security"))
        assert security, f"{method} {path} has no security requirement"
        assert {"bearerAuth": []} in security, f"{method} {path}"


def test_every_operation_documents_success_and_problem_errors(spec):
    for path, method, operation in operations(spec):
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), where
        responses = operation["responses"]
        successes = [status for status in responses if status.startswith("2")]
        assert successes, f"{where} has no success response"
        for status in ("401", "429", "default"):
            assert status in responses, f"{where} lacks {status}"
        for status, response in responses.items():
            response = resolve(spec, response)
            assert response.get("description"), f"{where} {status}"
            if status.startswith("2"):
                for content in response.get("content", {}).values():
                    assert "schema" in content, f"{where} {status}"
                continue
            content = response.get("content", {})
            assert list(content) == [PROBLEM], f"{where} {status}: {list(content)}"
            media = content[PROBLEM]
            assert resolve(spec, media["schema"]) == spec["components"]["schemas"]["Problem"]
            example = media.get("example")
            assert example, f"{where} {status} has no example"
            assert {"type", "title", "status", "code", "detail"} <= set(example)
            if status != "default":
                assert example["status"] == int(status), f"{where} {status}"


def test_problem_schema_names_the_stable_code(spec):
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "code", "detail", "errors"} <= set(problem["properties"])


def test_429_documents_retry_after_and_successes_document_rate_limit_headers(spec):
    for path, method, operation in operations(spec):
        too_many = resolve(spec, operation["responses"]["429"])
        assert "Retry-After" in too_many["headers"], f"{method} {path}"
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                headers = resolve(spec, response).get("headers", {})
                assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
                    headers
                ), f"{method} {path} {status}"


def test_path_parameters_are_documented(spec):
    for path, item in spec["paths"].items():
        if "{subscription_id}" not in path:
            continue
        parameters = list(item.get("parameters", []))
        for method in HTTP_METHODS & set(item):
            parameters += item[method].get("parameters", [])
        in_path = {p["name"]: p for p in parameters if p["in"] == "path"}
        assert set(in_path) == set(re.findall(r"{(\w+)}", path)), path
        for name, prefix in (("subscription_id", "wh_"), ("delivery_id", "dlv_")):
            if name in in_path:
                parameter = in_path[name]
                assert parameter["required"] is True and parameter.get("description"), path
                assert parameter.get("example", "").startswith(prefix), path


def test_webhook_operations_document_their_specific_errors(spec):
    paths = spec["paths"]
    create = paths[f"{PREFIX}/webhooks"]["post"]
    assert {"201", "400", "403", "409", "413", "415", "422"} <= set(create["responses"])
    assert create["requestBody"]["content"]["application/json"]["schema"]
    for path, method in [
        (f"{PREFIX}/webhooks/{{subscription_id}}", "get"),
        (f"{PREFIX}/webhooks/{{subscription_id}}", "patch"),
        (f"{PREFIX}/webhooks/{{subscription_id}}", "delete"),
        (f"{PREFIX}/webhooks/{{subscription_id}}/test", "post"),
        (f"{PREFIX}/webhooks/{{subscription_id}}/failures", "get"),
        (f"{PREFIX}/webhooks/{{subscription_id}}/deliveries", "get"),
        (f"{PREFIX}/webhooks/{{subscription_id}}/deliveries/{{delivery_id}}", "get"),
    ]:
        assert "404" in paths[path][method]["responses"], f"{method} {path}"
    assert {"202", "403", "409"} <= set(
        paths[f"{PREFIX}/webhooks/{{subscription_id}}/test"]["post"]["responses"]
    )
    for path in (f"{PREFIX}/webhooks", f"{PREFIX}/webhooks/{{subscription_id}}/failures"):
        names = {p["name"] for p in paths[path]["get"]["parameters"] if p["in"] == "query"}
        assert names == {"limit", "cursor"}
        assert "400" in paths[path]["get"]["responses"]  # invalid_cursor


def test_created_subscription_documents_the_secret_and_the_list_does_not(spec):
    schemas = spec["components"]["schemas"]
    created = resolve(
        spec,
        spec["paths"][f"{PREFIX}/webhooks"]["post"]["responses"]["201"]["content"][
            "application/json"
        ]["schema"],
    )
    assert "secret" in created["properties"]
    assert "secret" not in schemas["Subscription"]["properties"]
    page = resolve(
        spec,
        spec["paths"][f"{PREFIX}/webhooks"]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"],
    )
    assert set(page["properties"]) == {"data", "has_more", "next_cursor"}
    assert schemas["Failure"]["properties"]["dead_lettered"]["type"] == "boolean"


def test_docs_page_loads_only_its_own_assets_under_a_strict_policy(client):
    response = client.get(f"{PREFIX}/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert f'data-openapi-url="{OPENAPI}"' in page
    # Every reference is a path on this server; no inline script, no other host.
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert references and all(ref.startswith(f"{PREFIX}/docs/assets/") for ref in references)
    assert "<script>" not in page and "//" not in "".join(references)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy
    assert "connect-src 'self'" in policy
    for reference in references:
        asset = client.get(reference)
        assert asset.status_code == 200 and asset.data, reference


def test_docs_ship_swagger_ui_5_which_renders_openapi_3_1():
    from partner_api.web.docs import swagger_ui_version

    assert int(swagger_ui_version().split(".")[0]) >= 5


@pytest.mark.parametrize(
    "name", ["index.template.html", "oauth2-redirect.html", "VERSION", "..%2F__init__.py", "x.js"]
)
def test_docs_serve_no_other_file(client, name):
    response = client.get(f"{PREFIX}/docs/assets/{name}")
    assert response.status_code == 404 and response.mimetype == PROBLEM


def test_every_event_type_documents_its_delivery_and_signature_headers(spec):
    from partner_api.delivery.event_types import EVENT_TYPES

    assert set(spec["webhooks"]) == set(EVENT_TYPES)
    for event_type, item in spec["webhooks"].items():
        operation = item["post"]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert headers == {
            "X-VC-Timestamp",
            "X-VC-Signature",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        }
        body = operation["requestBody"]["content"]["application/json"]
        assert body["schema"]["required"] == [
            "event",
            "id",
            "subscription_id",
            "occurred_at",
            "data",
        ]
        assert body["example"]["event"] == event_type
        assert operation["security"] == []


def test_delivery_terms_in_the_document_follow_the_running_configuration(make_app):
    default = make_app().test_client().get(OPENAPI).get_json()
    text = default["webhooks"]["vc.test.ping"]["post"]["description"]
    assert "within 10s" in text and "1m, 5m, 30m, 2h, 6h and 24h" in text
    assert "(7 attempts in all)" in text

    custom = make_app(retry_schedule=(30, 90), delivery_timeout=2.5)
    text = custom.test_client().get(OPENAPI).get_json()["webhooks"]["vc.test.ping"]["post"]
    assert "within 2.5s" in text["description"]
    assert "after 30s and 1m30s, then dead-lettered (3 attempts in all)" in text["description"]


def test_every_operation_has_a_unique_operation_id(spec):
    ids = [operation.get("operationId") for _, _, operation in operations(spec)]
    assert all(ids) and len(set(ids)) == len(ids), ids


def test_webhook_url_is_documented_as_a_uri_of_at_most_2048_characters(spec):
    from partner_api.delivery.webhook_url import MAX_URL_LENGTH

    schemas = spec["components"]["schemas"]
    for name in ("SubscriptionCreate", "Subscription"):
        url = schemas[name]["properties"]["url"]
        assert (url["type"], url["format"], url["maxLength"]) == ("string", "uri", MAX_URL_LENGTH)


def test_cursor_and_limit_are_plain_typed_query_parameters(spec):
    for path, method, operation in operations(spec):
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "cursor":
                assert parameter["schema"] == {"type": "string"}, f"{method} {path}"
                assert parameter.get("required", False) is False


def test_every_component_schema_is_used(spec):
    """Referenced from somewhere other than its own definition (generators emit every one)."""
    for name in spec["components"]["schemas"]:
        others = dict(spec, components=dict(spec["components"]))
        others["components"]["schemas"] = {
            key: value for key, value in spec["components"]["schemas"].items() if key != name
        }
        assert f'"#/components/schemas/{name}"' in json.dumps(others), name


def test_links_from_create_reach_every_id_route_with_the_created_id(spec):
    """Every route that needs only the subscription's id (one delivery needs its own id too,
    which the create answer cannot give)."""
    create = spec["paths"][f"{PREFIX}/webhooks"]["post"]
    links = create["responses"]["201"]["links"]
    by_id = {
        operation["operationId"]
        for path, _, operation in operations(spec)
        if re.findall(r"{\w+}", path) == ["{subscription_id}"]
    }
    assert {link["operationId"] for link in links.values()} == by_id
    for link in links.values():
        assert link["parameters"] == {"subscription_id": "$response.body#/id"}
    assert links["TestWebhook"]["requestBody"] == {"secret": "$response.body#/secret"}


def test_reading_and_changing_a_subscription_link_to_each_other(spec):
    item = spec["paths"][f"{PREFIX}/webhooks/{{subscription_id}}"]
    by_id = {"subscription_id": "$response.body#/id"}
    read_links = item["get"]["responses"]["200"]["links"]
    assert read_links == {"UpdateWebhook": {"operationId": "update_webhook", "parameters": by_id}}
    changed_links = item["patch"]["responses"]["200"]["links"]
    assert changed_links == {"GetWebhook": {"operationId": "get_webhook", "parameters": by_id}}
    assert item["patch"]["requestBody"]["required"] is True


def test_the_update_body_documents_every_changeable_field_and_refuses_others(spec):
    update = spec["components"]["schemas"]["SubscriptionUpdate"]
    assert set(update["properties"]) == {"url", "events", "description", "status"}
    assert update["additionalProperties"] is False and not update.get("required")
    assert update["minProperties"] == 1
    assert update["properties"]["status"]["enum"] == ["enabled", "disabled"]
    url = update["properties"]["url"]
    assert (url["format"], url["maxLength"]) == ("uri", 2048)


def test_the_event_catalogue_is_documented_for_any_key(spec):
    from partner_api.delivery.event_types import EVENT_TYPES

    operation = spec["paths"][f"{PREFIX}/event-types"]["get"]
    assert operation["operationId"] == "list_event_types"
    schemas = spec["components"]["schemas"]
    item = resolve(spec, schemas["EventTypeList"]["properties"]["data"]["items"])
    assert set(item["properties"]) == {"name", "description"}
    assert "Any valid key" in operation["description"]
    assert set(EVENT_TYPES) <= set(
        schemas["SubscriptionUpdate"]["properties"]["events"]["items"]["enum"]
    )


def test_the_test_pings_delivery_links_to_its_redelivery(spec):
    pinged = spec["paths"][f"{PREFIX}/webhooks/{{subscription_id}}/test"]["post"]
    [link] = pinged["responses"]["202"]["links"].values()
    assert link == {
        "operationId": "redeliver_webhook_delivery",
        "parameters": {
            "subscription_id": "$request.path.subscription_id",
            "delivery_id": "$response.body#/delivery_id",
        },
    }


def test_idempotency_key_is_documented_on_create_and_test_ping(spec):
    for path in (f"{PREFIX}/webhooks", f"{PREFIX}/webhooks/{{subscription_id}}/test"):
        operation = spec["paths"][path]["post"]
        [header] = [p for p in operation["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key" and header["required"] is False
        assert header["schema"]["maxLength"] == 255 and header["schema"]["pattern"]
        assert {"409", "422"} <= set(operation["responses"])
    unprocessable = spec["components"]["responses"]["UNPROCESSABLE_CONTENT"]["description"]
    assert "`idempotency_key_reused`" in unprocessable
    assert "`invalid_idempotency_key`" in unprocessable


def test_create_documents_that_its_answer_is_not_cached(spec):
    created = spec["paths"][f"{PREFIX}/webhooks"]["post"]["responses"]["201"]
    assert created["headers"]["Cache-Control"]["schema"]["const"] == "no-store"


def test_create_documents_the_location_of_the_new_subscription(spec):
    created = spec["paths"][f"{PREFIX}/webhooks"]["post"]["responses"]["201"]
    assert f"{PREFIX}/webhooks/{{id}}" in created["headers"]["Location"]["description"]


def test_the_create_example_url_is_a_placeholder_and_the_document_says_so(spec):
    """Sent unchanged from "Try it out", the reserved example host does not resolve: the
    field and the operation say it must be replaced, and what answer it gets."""
    create = spec["paths"][f"{PREFIX}/webhooks"]["post"]
    url = spec["components"]["schemas"]["SubscriptionCreate"]["properties"]["url"]
    host = urllib.parse.urlsplit(url["example"]).hostname
    assert host == "example.com" or host.endswith(".example.com")  # reserved, RFC 2606
    for text in (url["description"], create["description"]):
        assert url["example"] in text and "placeholder" in text
        assert "your own HTTPS endpoint" in text and "`host_unresolvable`" in text


def test_events_document_the_star_for_every_type_present_and_future(spec):
    events = spec["components"]["schemas"]["SubscriptionCreate"]["properties"]["events"]
    assert events["items"]["enum"][0] == "*"
    assert 'Omitted, or `["*"]`: every type, present and future' in events["description"]
    assert "`event_types_with_wildcard`" in events["description"]
    unprocessable = spec["components"]["responses"]["UNPROCESSABLE_CONTENT"]["description"]
    assert "`event_types_with_wildcard`" in unprocessable


def test_request_examples_are_bodies_the_api_accepts(spec):
    """The examples a generated client or the docs' "Try it out" start from load cleanly."""
    from partner_api.delivery.ssrf import SsrfPolicy
    from partner_api.delivery.webhook_url import parse_webhook_url
    from partner_api.web.webhooks.schemas import SubscriptionCreateSchema, TestPingSchema

    schemas = spec["components"]["schemas"]
    for name, schema in (
        ("SubscriptionCreate", SubscriptionCreateSchema),
        ("TestPing", TestPingSchema),
    ):
        example = {
            field: prop["example"]
            for field, prop in schemas[name]["properties"].items()
            if "example" in prop
        }
        assert set(example) == set(schemas[name]["properties"]), name
        schema().load(example)  # raises on anything the API would refuse as validation_error
    parse_webhook_url(schemas["SubscriptionCreate"]["properties"]["url"]["example"], SsrfPolicy())
    [parameter] = spec["paths"][f"{PREFIX}/webhooks/{{subscription_id}}"]["parameters"]
    assert ids.looks_like("wh", parameter["example"])


def test_the_create_example_as_the_docs_fill_it_in_is_accepted(spec, client, make_key):
    """Swagger UI's "Try it out" body: each property's default where it has one, else example."""
    _, _, token = make_key()
    properties = spec["components"]["schemas"]["SubscriptionCreate"]["properties"]
    body = {name: prop.get("default", prop.get("example")) for name, prop in properties.items()}
    response = client.post(
        f"{PREFIX}/webhooks", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["url"] == body["url"]


def test_the_delivery_log_documents_its_status_filter_and_the_attempts_of_one(spec):
    deliveries = spec["paths"][f"{PREFIX}/webhooks/{{subscription_id}}/deliveries"]["get"]
    assert deliveries["operationId"] == "list_webhook_deliveries"
    query = {p["name"]: p for p in deliveries["parameters"] if p["in"] == "query"}
    assert set(query) == {"limit", "cursor", "status"}
    assert query["status"]["schema"]["enum"] == list(DeliveryStatus.ALL)
    assert {"400", "404", "422"} <= set(deliveries["responses"])
    one = spec["paths"][f"{PREFIX}/webhooks/{{subscription_id}}/deliveries/{{delivery_id}}"]["get"]
    assert one["operationId"] == "get_webhook_delivery"
    detail = resolve(spec, one["responses"]["200"]["content"]["application/json"]["schema"])
    assert detail["properties"]["attempts"]["type"] == "array"
    assert detail["properties"]["attempt_count"]["type"] == "integer"
    item = spec["components"]["schemas"]["Delivery"]
    assert item["properties"]["attempts"]["type"] == "integer"
