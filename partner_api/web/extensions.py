"""Thin flask-smorest subclasses: the single place for cross-cutting API behaviour.

Request parsing strictness (415/400/unknown fields), error documentation and the problem shape.
"""

from __future__ import annotations

import functools
import json

import flask
import flask_smorest
import marshmallow as ma
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from partner_api.web.openapi import RATE_LIMIT_HEADERS, register_error_responses
from partner_api.web.problems import (
    ApiError,
    ProblemSchema,
    from_http_exception,
    problem_response,
    register_error_handlers,
    status_name,
)


class StrictParser(FlaskParser):
    """Unknown fields are errors everywhere; non-JSON bodies are 415, broken JSON is 400."""

    def _raw_load_json(self, req):
        if not req.get_data(cache=True):
            return core.missing
        if not is_json_request(req):
            raise ApiError(
                415, "unsupported_media_type", "Send the request body as application/json."
            )
        try:
            data = core.parse_json(req.get_data(cache=True))
            # Lone surrogates (`"\ud800"`) parse, but are not text any database can store.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError):  # incl. decode errors and over-long integers
            self._handle_invalid_json_error(None, req)
        return data

    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON (UTF-8).")

    def load_headers(self, req, schema):
        return core.missing


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictParser(unknown=ma.RAISE)

    def _store_endpoint_docs(self, endpoint, obj, parameters, tags, **options):
        """Every operation gets an `operationId`: its view function's name (what client
        generators name the method after, and what OpenAPI links point at)."""
        super()._store_endpoint_docs(endpoint, obj, parameters, tags, **options)
        for method, doc in self._docs[endpoint].items():
            if method != "parameters":
                doc.setdefault("manual_doc", {}).setdefault("operationId", obj.__name__)

    def arguments(self, schema, *, location="json", **kwargs):
        """As flask-smorest's; an operation without parameters (NoQuerySchema) called without
        a query string, as every GET /me is, skips the parsing: there is nothing to load, and
        the layers that load nothing cost more than the SQLite lookup (cProfile)."""
        parse = super().arguments(schema, location=location, **kwargs)
        if location != "query" or not (
            schema is NoQuerySchema or isinstance(schema, NoQuerySchema)
        ):
            return parse

        def decorator(func):
            parsing = parse(func)

            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                if flask.request.query_string:
                    return parsing(*args, **kwargs)  # an unknown parameter: webargs' 422
                return func(*args, {}, **kwargs)

            wrapper._apidoc = parsing._apidoc
            return wrapper

        return decorator

    def response(self, status_code, schema=None, **kwargs):
        """A success response, documented with the rate-limit headers every one carries."""
        kwargs.setdefault("headers", dict(RATE_LIMIT_HEADERS))
        return super().response(status_code, schema, **kwargs)

    def errors(self, *statuses):
        """Document the error answers an operation can give (problem+json, with examples).

        Every operation reads the database, so every one may answer 503 while it is down."""

        def decorator(func):
            documented = func
            for status in sorted({*statuses, 503}, reverse=True):
                alt_response = self.alt_response(status, response=status_name(status))
                documented = alt_response(documented)
            # Keep the documentation, not alt_response's pass-through wrappers: one call layer
            # per documented status, on every request.
            func._apidoc = documented._apidoc
            return func

        return decorator


class SchemaConverter(OpenAPIConverter):
    """A schema's `Meta.openapi` keywords join its JSON Schema: what marshmallow cannot say
    of a whole object (`minProperties`) is still documented, next to the check enforcing it."""

    def schema2jsonschema(self, schema):
        jsonschema = super().schema2jsonschema(schema)
        jsonschema.update(getattr(getattr(schema, "Meta", None), "openapi", {}))
        return jsonschema


class SchemaMarshmallowPlugin(MarshmallowPlugin):
    Converter = SchemaConverter


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ProblemSchema

    def __init__(self, app=None, *, spec_kwargs=None):
        spec_kwargs = {"marshmallow_plugin": SchemaMarshmallowPlugin(), **(spec_kwargs or {})}
        super().__init__(app, spec_kwargs=spec_kwargs)

    def _register_error_handlers(self):
        register_error_handlers(self._app)
        from werkzeug.exceptions import HTTPException

        self._app.register_error_handler(HTTPException, self.handle_http_exception)

    def _register_pagination_header(self):
        """Lists page with `limit` + `cursor` (see pagination.py), not flask-smorest's pages:
        registering its header would leave an unused PaginationMetadata schema."""

    def handle_http_exception(self, error):
        return problem_response(from_http_exception(error))

    def _register_responses(self):
        register_error_responses(self.spec, self.ERROR_SCHEMA)


class NoQuerySchema(ma.Schema):
    """An operation without query parameters: any parameter is an unknown field."""
