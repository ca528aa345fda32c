#!/usr/bin/env bash
# `make run`: create/upgrade the database, provision a demo org and key on first run, then serve
# the API under gunicorn and run the dispatcher until Ctrl-C (or SIGTERM) stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8000}"
BIN=.venv/bin

$BIN/flask --app wsgi init-db
$BIN/flask --app wsgi demo-key --docs-url "http://127.0.0.1:${PORT}/api/v1/partner/docs"

interrupted=0
trap 'interrupted=1' INT TERM  # before starting anything, so no signal is missed
# The production settings (metrics from every worker, logs in PARTNER_API_LOG_FORMAT), with a
# development-sized pool on the chosen port.
$BIN/gunicorn -c deploy/gunicorn.conf.py --bind "127.0.0.1:${PORT}" \
    --workers "${WEB_CONCURRENCY:-2}" wsgi:app &
api_pid=$!
$BIN/python -m dispatcher &
dispatcher_pid=$!

stop() {
    trap - INT TERM
    kill -TERM "$api_pid" "$dispatcher_pid" 2>/dev/null || true
    wait "$api_pid" "$dispatcher_pid" 2>/dev/null || true
}
# Whichever process ends first (or Ctrl-C) stops the other. A process that ends on its own,
# e.g. gunicorn unable to bind the port, makes `make run` fail with its status.
status=0
wait -n "$api_pid" "$dispatcher_pid" || status=$?
stop
if [ "$interrupted" = 1 ]; then
    exit 0
fi
if [ "$status" = 0 ]; then
    status=1  # neither process is meant to stop by itself
fi
echo "make run: a process stopped unexpectedly (status $status); see the log above" >&2
exit "$status"
