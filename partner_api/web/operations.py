"""Operations endpoints, outside the partner API and its OpenAPI document: no auth, no limit.

`/healthz` (the process serves), `/readyz` (database answers, schema current), `/metrics`.
"""

from __future__ import annotations

import logging

import peewee
from flask import Blueprint, current_app, jsonify

from partner_api import db, migrations, models
from partner_api.web import metrics
from partner_api.web.problems import ApiError

blp = Blueprint("operations", __name__)
log = logging.getLogger(__name__)


def readiness_problem() -> ApiError | None:
    """None when the database answers, has applied exactly the migrations this code knows, and
    holds every table and column the code uses."""
    try:
        db.database.execute_sql("SELECT 1").fetchone()
    except peewee.DatabaseError as exc:
        log.warning("not ready: %s", db.database_problem(exc))
        return ApiError(503, "database_unavailable", "The database does not answer.")
    try:
        with db.database.atomic():
            problem = migrations.migration_status().problem()
            if problem is not None:
                raise problem
            for model in models.BaseModel.__subclasses__():
                # Selecting every field of every model fails on a missing table or column.
                list(model.select().limit(0))
            db.app_secret("cursor_signing_key")
    except migrations.MigrationError as exc:
        # Pending migrations (run init-db), or a database a newer release has migrated.
        log.warning("not ready: %s", exc.message)
        return ApiError(503, "schema_not_current", exc.message[:1].upper() + exc.message[1:] + ".")
    except (peewee.DatabaseError, RuntimeError) as exc:
        log.warning("not ready: %s", db.database_problem(exc))
        return ApiError(
            503,
            "schema_not_current",
            "The database schema is missing or old: run `flask --app wsgi init-db`.",
        )
    return None


@blp.get("/healthz")
def healthz():
    """The process serves."""
    return jsonify(status="ok")


@blp.get("/readyz")
def readyz():
    """The database answers and its schema is current."""
    problem = readiness_problem()
    if problem is not None:
        raise problem
    return jsonify(status="ok")


@blp.get("/metrics")
def prometheus_metrics():
    """Prometheus text for every worker of this API, and the delivery queue's gauges."""
    config = current_app.config["PARTNER_API"]
    body, content_type = metrics.exposition(
        config.prometheus_multiproc_dir, current_app.extensions["partner_api_queue_gauges"]
    )
    return current_app.response_class(body, mimetype=None, content_type=content_type)
