"""A third baseline: the real app without the per-request work the API promises beside /me.

`wsgi:app` with the telemetry hooks (request id, log line, metrics) and the rate-limit headers'
hook removed; everything else (auth, the database statements, flask-smorest, the view) is the
real code. `bench/api.py` serves it beside `/me` to show what that work costs per
answer. Not a configuration anyone should run: every answer lacks `X-Request-Id`, its log
line, its metrics and its `X-RateLimit-*` headers.
"""

from partner_api.web import auth, telemetry
from wsgi import app

_REMOVED = {telemetry._begin, telemetry._end, auth.add_rate_limit_headers}
for hooks in (app.before_request_funcs, app.after_request_funcs):
    for name, funcs in hooks.items():
        hooks[name] = [func for func in funcs if func not in _REMOVED]
