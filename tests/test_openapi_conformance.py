"""The app against its own OpenAPI document, with schemathesis: generated requests, one
operation at a time and as linked sequences (create, then the id routes), authenticated with a
real key. No answer may be a 5xx, undocumented, or differ from its documented schema."""

from __future__ import annotations

import dataclasses

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode, checks

from partner_api import create_app
from partner_api.db import database
from partner_api.models import (
    Delivery,
    DeliveryFailure,
    DeliveryHistory,
    DueWork,
    Event,
    IdempotencyKey,
    Subscription,
)

from .conftest import bearer

OPENAPI = "/api/v1/partner/openapi.json"
# Bounded and reproducible: the same examples on every run, no time-based deadline.
SETTINGS = hypothesis.settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
# 150 scenarios of up to 8 steps: the create answer links to eight operations and the ping to a
# redelivery, and fewer did not reach every linked operation's success (about a minute).
STATEFUL_SETTINGS = hypothesis.settings(
    SETTINGS, max_examples=150, stateful_step_count=8, phases=[hypothesis.Phase.generate]
)
CONFORMANCE = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def loopback_resolver(host: str, port: int) -> list[str]:
    """Every generated host name is loopback (allowed in tests): DNS never leaves the machine."""
    return ["127.0.0.1"]


@pytest.fixture
def token(make_key):
    _, _, token = make_key(rate_limit=1_000_000)  # generated traffic, not the limit, is tested
    return token


@pytest.fixture
def api_schema(config):
    app = create_app(
        {
            "PARTNER_API": dataclasses.replace(
                config, resolver=loopback_resolver, max_subscriptions_per_org=10_000
            ),
            "TESTING": True,
        }
    )
    return schemathesis.openapi.from_wsgi(OPENAPI, app)


def test_every_operation_answers_as_documented(api_schema, token):
    # One Hypothesis run per operation, driven here rather than by schemathesis' pytest
    # plugin, which needs pytest internals that pytest 9 no longer has.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 12

    for operation in operations:
        # Valid requests, and requests that break the document (wrong types, unknown fields,
        # bad ids...), which must be refused as documented, never with a 5xx.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @SETTINGS
            def answers_as_documented(case):
                case.call_and_validate(headers=bearer(token), checks=CONFORMANCE)

            answers_as_documented()


def test_linked_sequences_answer_as_documented(api_schema, token):
    """Create a subscription, then read it, change it, delete it, ping it, list its failures
    and deliveries, with its real id."""
    answered = set()

    class Sequences(api_schema.as_state_machine()):
        def setup(self):
            # Each scenario starts from no subscriptions: what a step generates may depend on
            # earlier answers (ids from lists), and Hypothesis replays scenarios exactly.
            with database.connection_context():
                for model in (
                    IdempotencyKey,
                    DeliveryHistory,
                    DeliveryFailure,
                    Delivery,
                    Event,
                    DueWork,
                    Subscription,
                ):
                    model.delete().execute()

        def get_call_kwargs(self, case):
            return {"headers": bearer(token)}

        def after_call(self, response, case):
            answered.add((case.operation.label, response.status_code))

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CONFORMANCE, transport_kwargs=kwargs)

    Sequences.run(settings=STATEFUL_SETTINGS)
    # The links carried real ids (and the secret) into the id routes: they succeeded.
    by_id = "/api/v1/partner/webhooks/{subscription_id}"
    assert {
        (f"GET {by_id}", 200),
        (f"PATCH {by_id}", 200),
        (f"DELETE {by_id}", 204),
        (f"POST {by_id}/test", 202),
        (f"GET {by_id}/failures", 200),
        (f"GET {by_id}/deliveries", 200),
    } <= answered, sorted(answered)
