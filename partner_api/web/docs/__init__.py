"""Interactive API docs: Swagger UI 5 from the pinned flask-swagger-ui package's own files.

Everything the page needs is served by the app, and its Content-Security-Policy forbids the rest.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template, send_from_directory, url_for

HERE = Path(__file__).parent
SWAGGER_UI_DIST = Path(str(resources.files("flask_swagger_ui") / "dist"))
# Only what the page loads; the rest of the package (its template with an inline script,
# the OAuth redirect page) is not served.
SWAGGER_UI_FILES = frozenset(
    {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"}
)
OWN_FILES = frozenset({"swagger-init.js"})
# Swagger UI sets inline styles and data: icons; nothing may load from or talk to elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

blp = Blueprint("docs", __name__, template_folder=".")


@blp.get("/docs")
def docs_page():
    """The Swagger UI page for the app's own OpenAPI document."""
    response = current_app.make_response(
        render_template(
            "swagger-ui.html",
            title=current_app.config["API_TITLE"],
            openapi_url=url_for("api-docs.openapi_json"),
            assets=url_for("docs.docs_asset", filename="").rstrip("/"),
        )
    )
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@blp.get("/docs/assets/<filename>")
def docs_asset(filename):
    """A file the page loads: Swagger UI's from the package, or our initialiser."""
    if filename in SWAGGER_UI_FILES:
        return send_from_directory(SWAGGER_UI_DIST, filename)
    if filename in OWN_FILES:
        return send_from_directory(HERE, filename)
    abort(404)


def swagger_ui_version() -> str:
    """The shipped Swagger UI version, e.g. `5.34.0`."""
    return (SWAGGER_UI_DIST / "VERSION").read_text().strip().removeprefix("v")
