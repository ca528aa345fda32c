"""Another org's GET /me while one key keeps creates in flight whose host's DNS never answers:
without the caps on lookups in flight (the baseline) and with the shipped ones, in one run.

Usage: .venv/bin/python -m bench.slow_dns [--postgres URL] [--seconds 8] [--workers N]

gunicorn runs the shipped deploy/gunicorn.conf.py (2 × cores + 1 sync workers unless
--workers says otherwise) serving `harness.fake_dns_app`, where `hung.example.com` never
answers. One `webhooks:manage` key keeps workers + 1 creates for it in flight (each sent again
as soon as it is answered) while another org's key asks GET /me, one request at a time. The
baseline sets PARTNER_API_DNS_LOOKUPS_PER_ORG and _TOTAL out of reach, which is the behaviour
before the caps. Both keys have a limit of 1,000,000 requests a minute, so only the caps refuse.
Prints /me's p50, p99 and slowest answer idle and under that load, and how the creates were
answered. `--postgres URL` adds a PostgreSQL run (its tables are dropped and recreated).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import tempfile
from pathlib import Path

from bench.engine import fresh_database, percentile
from harness.dns import HANG
from harness.net import ME_PATH, get, keep_sending, post_json
from harness.servers import start_gunicorn
from partner_api import provisioning
from partner_api.db import database

WEBHOOKS = "/api/v1/partner/webhooks"
HUNG_URL = "https://hung.example.com/hook"
VARIANTS = {
    "without caps (baseline)": {
        "PARTNER_API_DNS_LOOKUPS_PER_ORG": "1000",
        "PARTNER_API_DNS_LOOKUPS_TOTAL": "10000",
    },
    "shipped caps (1 per org, 2 in all)": {},
}


def keys() -> tuple[str, str]:
    """(the hung partner's token, the other org's token)."""
    with database.connection_context():
        tokens = []
        for name, scopes in (("Hung", ["webhooks:manage"]), ("Other", [])):
            org = provisioning.create_org(name)
            tokens.append(provisioning.create_key(org.id, "bench", scopes, 1_000_000)[1])
    return tokens[0], tokens[1]


def run(url: str, settings: dict, workers: int, seconds: float, scratch: Path) -> dict:
    """/me latencies (ms) idle and under load, and the creates' answers by status and code."""
    hung_token, other_token = keys()
    env = {
        "DATABASE_URL": url,
        "HARNESS_DNS": json.dumps({"hung.example.com": HANG}),
        **settings,
    }
    log_path = scratch / f"gunicorn-{len(os.listdir(scratch))}.log"

    def me() -> float:
        status, _, _, took = get(port, ME_PATH, {"Authorization": f"Bearer {other_token}"}, 60)
        assert status == 200, status
        return took * 1000

    def hung_create() -> str:
        auth = {"Authorization": f"Bearer {hung_token}"}
        status, _, body, _ = post_json(port, WEBHOOKS, {"url": HUNG_URL}, auth, 60)
        return f"{status} {json.loads(body)['code']}"

    with start_gunicorn(
        env, log_path, app="harness.fake_dns_app:app", workers=workers, probe=ME_PATH
    ) as server:
        port = server.port
        keep_sending(me, 4, 0.5)  # warm up: each worker's first requests open its connection
        idle = keep_sending(me, 1, 2.0)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            creates = pool.submit(keep_sending, hung_create, workers + 1, seconds)
            loaded = keep_sending(me, 1, seconds)
            answers = collections.Counter(creates.result())
    return {"idle": idle, "loaded": loaded, "creates": answers}


def row(backend: str, variant: str, result: dict) -> str:
    idle, loaded = result["idle"], result["loaded"]
    creates = ", ".join(f"{n} × {answer}" for answer, n in sorted(result["creates"].items()))
    return (
        f"| {backend} | {variant} | {percentile(idle, 0.5):.1f} / {percentile(idle, 0.99):.1f} | "
        f"{percentile(loaded, 0.5):.1f} / {percentile(loaded, 0.99):.1f} | "
        f"{max(loaded):,.1f} | {len(loaded)} | {creates} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a scratch PostgreSQL database URL")
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per run")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="slow-dns-bench-"))
    backends = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    print(
        f"{args.workers} workers, {args.workers + 1} hung creates kept in flight, "
        f"{args.seconds:g} s per run"
    )
    print(
        "| backend | lookups | /me idle p50 / p99 (ms) | /me loaded p50 / p99 (ms) | "
        "slowest (ms) | /me answered | creates answered |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for backend, postgres in backends:
        for variant, settings in VARIANTS.items():
            url = fresh_database(postgres, scratch)
            result = run(url, settings, args.workers, args.seconds, scratch)
            print(row(backend, variant, result), flush=True)


if __name__ == "__main__":
    main()
