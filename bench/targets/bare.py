"""The benchmark's baseline: a bare Flask app answering constant JSON on the API's /me path.

Served by gunicorn with the same settings as the real app (`bench/api.py` starts it beside
the app, `bench/targets/db_floor.py` and `bench/targets/lean.py`).
"""

from flask import Flask

app = Flask(__name__)


@app.get("/api/v1/partner/me")
def me():
    return {"org": {"id": "org_bench", "name": "bench"}, "scopes": ["identity:read"]}
