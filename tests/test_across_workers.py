"""The rate limit and revocation hold across several gunicorn workers (real processes)."""

import concurrent.futures
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from partner_api.config import ROOT

from .conftest import gunicorn_server

ME_PATH = "/api/v1/partner/me"
WORKERS = 4


@pytest.fixture
def server(database_url):
    with gunicorn_server(database_url, workers=WORKERS) as base:
        yield base


def get_me(base: str, token: str):
    request = urllib.request.Request(base + ME_PATH, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("X-RateLimit-Reset")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("X-RateLimit-Reset")


def _burst(base: str, token: str, count: int) -> list:
    return [get_me(base, token) for _ in range(count)]


def cli(*args):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args, "--json"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "DATABASE_URL": os.environ["DATABASE_URL"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.fixture
def provisioned(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    org = cli("orgs", "create", "Acme")
    return org


def test_exactly_the_limit_is_admitted_across_workers_and_processes(server, provisioned):
    limit, processes, per_process = 25, 4, 15
    for _attempt in range(3):
        key = cli("keys", "create", "--org", provisioned["id"], "--rate-limit", str(limit))
        with concurrent.futures.ProcessPoolExecutor(processes) as pool:
            futures = [
                pool.submit(_burst, server, key["token"], per_process) for _ in range(processes)
            ]
            results = [item for future in futures for item in future.result()]
        if len({reset for _, reset in results}) != 1:
            continue  # the burst straddled a window boundary; try again in the new window
        statuses = [status for status, _ in results]
        assert statuses.count(200) == limit
        assert statuses.count(429) == processes * per_process - limit
        return
    pytest.fail("every burst straddled a rate-limit window boundary")


def test_revocation_takes_effect_in_every_worker_at_once(server, provisioned):
    key = cli("keys", "create", "--org", provisioned["id"])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        before = list(pool.map(lambda _: get_me(server, key["token"])[0], range(16)))
    assert set(before) == {200}
    cli("keys", "revoke", key["id"])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        after = list(pool.map(lambda _: get_me(server, key["token"])[0], range(16)))
    assert set(after) == {401}
