"""The one harness the tests and the benchmarks share: real processes and local peers on loopback.

- `harness.net`: free loopback ports, waiting for a condition, raw HTTP helpers (`get`,
  `post_json`, `half_sent_requests`), `keep_sending` (requests kept in flight).
- `harness.servers`: gunicorn serving an app (the shipped config or gunicorn's defaults),
  nginx with the shipped site.
- `harness.dispatcher`: the dispatcher process (`python -m dispatcher`, polling or `--once`).
- `harness.pgbouncer`: `PgBouncer(url)`, Debian's pgbouncer in transaction pooling mode in front
  of a PostgreSQL database.
- `harness.receivers`: webhook receivers in this process (`Receiver`, `SilentReceiver`) and in
  their own (`ReceiverProcess`, `python -m harness.receivers MODE`).
- `harness.dns`: `FakeResolver`, injectable DNS; `harness.fake_dns_app`: the app under
  gunicorn with a `FakeResolver` (names that resolve, names that hang).

Everything listens on, and connects to, 127.0.0.1 only.
"""
