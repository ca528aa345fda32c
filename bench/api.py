"""GET /me under gunicorn against a bare Flask route, and the API under mixed contention.

Usage: .venv/bin/python -m bench.api [--rounds 8] [--duration 3] [--postgres URL]
       .venv/bin/python -m bench.api --contention [--duration 30]

Default mode: the real app (`wsgi:app`, a key with a 1,000,000/min limit), `bench/targets/bare.py`,
`bench/targets/db_floor.py` (the bare route plus the statements /me runs, sent with the driver
directly: the most a database-backed /me can reach) and `bench/targets/lean.py` (the real app
without its request id, log line, metrics and rate-limit headers) run under the same gunicorn
settings (4 sync workers); wrk (2 threads, 32 connections) drives them in alternating (ABCD,
DCBA) rounds; the median of the rounds' ratios of requests/s to the bare route is printed with
its range, and the CPU each answer cost in gunicorn's processes (of which, in parentheses, the
part spent inside the app, counted by `bench/targets/timed.py`) and in PostgreSQL's, on SQLite and,
with --postgres, on PostgreSQL (whose tables it drops and recreates).

--contention (SQLite): 48 clients mix /me, list and create on four keys, 8 clients probe /me
with another key; first alone, then while 8 more clients flood /me with a key over its limit
(64 clients). Prints statuses, 5xx, "database is locked" and the probe's p99 without and with
the flood.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.targets.timed import read_totals
from harness.net import ME_PATH
from harness.servers import start_gunicorn
from partner_api import provisioning, tokens
from partner_api.db import apply_schema, bind, database, drop_tables

WEBHOOKS_PATH = "/api/v1/partner/webhooks"
WORKERS = 4

# wrk calls done() once at the end: print the figures as one JSON line, plus (when the script
# counts answers in response()) the statuses seen and the answers that mention a locked database.
_REPORT_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  local statuses, locked = {}, 0
  for _, thread in ipairs(threads) do
    local counts = thread:get("counts") or {}
    for status, n in pairs(counts) do
      statuses[tostring(status)] = (statuses[tostring(status)] or 0) + n
    end
    locked = locked + (thread:get("locked") or 0)
  end
  local parts = {}
  for status, n in pairs(statuses) do table.insert(parts, string.format('"%s": %d', status, n)) end
  io.write(string.format(
    '@@{"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "non_2xx": %d, ' ..
    '"socket_errors": %d, "locked": %d, "statuses": {%s}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    locked, table.concat(parts, ", ")))
end
"""

_COUNT_LUA = """
counts, locked = {}, 0
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if body and body:find("database is locked", 1, true) then locked = locked + 1 end
end
"""

# Each wrk thread takes one of the mixed keys; of every 10 requests 6 are /me, 3 list, 1 create.
_MIXED_LUA = """
local tokens = {%(tokens)s}
local next_thread = 0
local setup_report = setup
function setup(thread)
  next_thread = next_thread + 1
  thread:set("token", tokens[(next_thread - 1) %% #tokens + 1])
  setup_report(thread)
end
local n = 0
function request()
  n = n + 1
  local headers = {["Authorization"] = "Bearer " .. token}
  local step = n %% 10
  if step == 0 then
    headers["Content-Type"] = "application/json"
    return wrk.format("POST", "%(webhooks)s", headers,
      string.format('{"url": "http://127.0.0.1:9/hook-%%d"}', n))
  elseif step <= 3 then
    return wrk.format("GET", "%(webhooks)s?limit=10", headers)
  end
  return wrk.format("GET", "%(me)s", headers)
end
"""


@dataclasses.dataclass(frozen=True)
class Server:
    base: str  # http://127.0.0.1:<port>
    pid: int  # gunicorn's master
    timed_dir: Path  # where bench.targets.timed counts the CPU spent in the app


@contextlib.contextmanager
def gunicorn(app: str, env: dict, log_path: Path):
    """Serve `app` with 4 sync workers (gunicorn's defaults otherwise) on an ephemeral port;
    yields its Server.

    `bench/targets/timed.py` wraps the app and counts the CPU spent in it beside the log
    file. The app's own lines (one per request) go to the log file too, as to a journal in
    production: written to a terminal they would cost the terminal, and so the round, more."""
    timed_dir = log_path.with_suffix(".cpu")
    timed_dir.mkdir()
    env = {**env, "TIMED_APP": app, "TIMED_APP_DIR": str(timed_dir)}
    try:
        server = start_gunicorn(
            env,
            log_path,
            app="bench.targets.timed:app",
            workers=WORKERS,
            config=None,
            probe=ME_PATH,
            inherit_env=True,
        )
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    with server:
        yield Server(server.base, server.pid, timed_dir)


def _processes() -> list[tuple[int, int, str, int]]:
    """(pid, parent pid, name, CPU ticks used) of every process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found.append((int(entry.name), int(fields[1]), name, int(fields[11]) + int(fields[12])))
    return found


def cpu_ticks(server: Server) -> dict:
    """CPU ticks used so far by the server's gunicorn processes and by PostgreSQL's."""
    processes = _processes()
    workers = {pid for pid, parent, _, _ in processes if parent == server.pid} | {server.pid}
    return {
        "gunicorn": sum(t for pid, _, _, t in processes if pid in workers),
        "postgres": sum(t for _, _, name, t in processes if name == "postgres"),
    }


def wrk(
    url: str,
    script: str,
    *,
    threads: int,
    connections: int,
    duration: float,
    headers=(),
    background=False,
):
    """Run wrk with `script` (plus the JSON report); returns its report, or the process."""
    script_file = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    script_file.write(_REPORT_LUA + script)
    script_file.close()
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s"]
    command += ["--timeout", "5s", "-s", script_file.name]
    for header in headers:
        command += ["-H", header]
    process = subprocess.Popen([*command, url], stdout=subprocess.PIPE, text=True)
    process.script_path = script_file.name
    return process if background else wrk_report(process)


def wrk_report(process: subprocess.Popen) -> dict:
    output, _ = process.communicate()
    os.unlink(process.script_path)
    for line in output.splitlines():
        if line.startswith("@@"):
            report = json.loads(line[2:])
            report["rps"] = report["requests"] / report["seconds"]
            return report
    raise SystemExit(f"wrk printed no report:\n{output}")


def seed(url: str, keys: int = 1, rate_limits=None) -> list[str]:
    """A fresh schema and `keys` keys (each in its own org); returns their tokens."""
    bind(url)
    drop_tables()
    apply_schema()
    tokens = []
    with database.connection_context():
        for n in range(keys):
            org = provisioning.create_org(f"bench {n}")
            limit = (rate_limits or {}).get(n, 1_000_000)
            tokens.append(provisioning.create_key(org.id, "bench", ["webhooks:manage"], limit)[1])
    database.close()
    return tokens


def measure(server: Server, headers, duration: float) -> dict:
    """One wrk round against GET /me of `server`, with the CPU it cost per answer."""
    before, app_before = cpu_ticks(server), read_totals(server.timed_dir)
    report = wrk(
        server.base + ME_PATH,
        "",
        threads=2,
        connections=32,
        duration=duration,
        headers=headers,
    )
    after, app_after = cpu_ticks(server), read_totals(server.timed_dir)
    per_request = 1e6 / os.sysconf("SC_CLK_TCK") / max(1, report["requests"])
    for group in before:
        report[f"{group}_us"] = (after[group] - before[group]) * per_request
    answers, nanoseconds = (a - b for a, b in zip(app_after, app_before, strict=True))
    report["app_us"] = nanoseconds / 1000 / max(1, answers)
    return report


TARGETS = ("bare", "floor", "lean", "me")


# Long: the rounds of one comparison, ABCD then DCBA, in the order they run.
def compare(label: str, url: str, rounds: int, duration: float, workdir: Path) -> dict:
    """Alternating wrk rounds against the bare app, the database floor, the app without its
    telemetry and rate-limit headers (bench/targets/lean.py) and the real /me."""
    (token,) = seed(url)
    auth = (f"Authorization: Bearer {token}",)
    env = {
        "DATABASE_URL": url,
        "BENCH_DATABASE_URL": url,
        "BENCH_TOKEN_HASH": tokens.hash_token(token),
    }
    apps = {  # target: (app, request headers)
        "bare": ("bench.targets.bare:app", ()),
        "floor": ("bench.targets.db_floor:app", ()),
        "lean": ("bench.targets.lean:app", auth),
        "me": ("wsgi:app", auth),
    }
    results = {name: [] for name in TARGETS}
    with contextlib.ExitStack() as stack:
        targets = [
            (
                name,
                stack.enter_context(gunicorn(app, env, workdir / f"{label}-{name}.log")),
                headers,
            )
            for name, (app, headers) in apps.items()
        ]
        for _name, server, headers in targets:  # warm up
            wrk(server.base + ME_PATH, "", threads=2, connections=32, duration=1, headers=headers)
        for round_no in range(1, rounds + 1):
            # ABCD then DCBA, so a load that drifts during the run favours none of them
            for name, server, headers in targets if round_no % 2 else targets[::-1]:
                report = measure(server, headers, duration)
                results[name].append(report)
                print(
                    f"{label:10} round {round_no} {name:5}: {report['rps']:7.0f} req/s  "
                    f"p50 {report['p50_ms']:5.1f} ms  p99 {report['p99_ms']:5.1f} ms  "
                    f"CPU/answer gunicorn {report['gunicorn_us']:5.0f} us "
                    f"(in the app {report['app_us']:4.0f}) "
                    f"postgres {report['postgres_us']:4.0f} us  "
                    f"errors {report['non_2xx'] + report['socket_errors']}",
                    flush=True,
                )
    summary = {
        name: {
            key: statistics.median(r[key] for r in reports)
            for key in ("rps", "p50_ms", "p99_ms", "gunicorn_us", "app_us", "postgres_us")
        }
        | {"errors": sum(r["non_2xx"] + r["socket_errors"] for r in reports)}
        for name, reports in results.items()
    }
    # The machine may be shared: compare each round's figures, measured seconds apart, and
    # take the median of those ratios rather than the ratio of medians from different moments.
    for name in TARGETS[1:]:
        pairs = zip(results["bare"], results[name], strict=True)
        ratios = [other["rps"] / bare["rps"] for bare, other in pairs]
        summary[name]["ratio"] = statistics.median(ratios)
        summary[name]["ratio_range"] = (min(ratios), max(ratios))
    return summary


def print_summary(summaries: dict) -> None:
    print(
        "\nmedian of rounds | target | req/s | ratio to bare (range) | p50/p99 ms "
        "| CPU per answer: gunicorn (in the app) / postgres us | errors"
    )
    for label, by_target in summaries.items():
        for name in TARGETS:
            s = by_target[name]
            ratio = (
                f"{s['ratio']:4.2f} ({s['ratio_range'][0]:.2f}-{s['ratio_range'][1]:.2f})"
                if "ratio" in s
                else "1"
            )
            print(
                f"{label:10} | {name:5} | {s['rps']:6.0f} | {ratio:16} | "
                f"{s['p50_ms']:5.1f}/{s['p99_ms']:5.1f} | "
                f"{s['gunicorn_us']:5.0f} ({s['app_us']:4.0f}) / {s['postgres_us']:4.0f} | "
                f"{s['errors']}"
            )


def eight_clients_on_me(base: str, token: str, duration: float) -> subprocess.Popen:
    """wrk in the background: 8 connections asking GET /me with `token`, answers counted."""
    return wrk(
        base + ME_PATH,
        _COUNT_LUA,
        threads=1,
        connections=8,
        duration=duration,
        headers=(f"Authorization: Bearer {token}",),
        background=True,
    )


# Long: one scenario, its servers, its two client groups and its report, in order.
def contention(duration: float, workdir: Path) -> None:
    """Mixed load on SQLite, without and then with a flood of 429s from one key."""
    url = f"sqlite:///{workdir / 'contention.sqlite3'}"
    # keys 0-3 mixed, 4 probe, 5 flood (60/min, so nearly every flood request is refused)
    tokens = seed(url, keys=6, rate_limits={5: 60})
    mixed_tokens, probe_token, flood_token = tokens[:4], tokens[4], tokens[5]
    env = {
        "DATABASE_URL": url,
        "PARTNER_API_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
        "PARTNER_API_ALLOW_HTTP_WEBHOOKS": "true",
        "PARTNER_API_MAX_SUBSCRIPTIONS_PER_ORG": "10000",
    }
    log_path = workdir / "contention.log"
    mixed_script = _COUNT_LUA + _MIXED_LUA % {
        "tokens": ", ".join(f'"{t}"' for t in mixed_tokens),
        "webhooks": WEBHOOKS_PATH,
        "me": ME_PATH,
    }
    phases = {}
    with gunicorn("wsgi:app", env, log_path) as server:
        base = server.base
        for phase in ("alone", "flood"):
            runs = {
                "mixed": wrk(
                    base,
                    mixed_script,
                    threads=4,
                    connections=48,
                    duration=duration,
                    background=True,
                ),
                "probe": eight_clients_on_me(base, probe_token, duration),
            }
            if phase == "flood":
                runs["flood"] = eight_clients_on_me(base, flood_token, duration)
            phases[phase] = {name: wrk_report(process) for name, process in runs.items()}
    log_text = log_path.read_text()
    locked_in_log = log_text.count("database is locked")
    print(f"contention on SQLite, {WORKERS} workers, {duration:g} s per phase")
    for phase, reports in phases.items():
        clients = 56 if phase == "alone" else 64
        print(f"\n{phase} ({clients} clients):")
        for name, r in reports.items():
            fivexx = sum(n for status, n in r["statuses"].items() if status.startswith("5"))
            print(
                f"  {name:5}: {r['rps']:6.0f} req/s  p50 {r['p50_ms']:6.1f} ms  "
                f"p99 {r['p99_ms']:6.1f} ms  statuses {dict(sorted(r['statuses'].items()))}  "
                f"5xx {fivexx}  socket errors {r['socket_errors']}  locked {r['locked']}"
            )
    print(
        f"\n'database is locked' in the server log: {locked_in_log}; "
        f"tracebacks: {log_text.count('Traceback')}"
    )
    print(
        f"probe key p99: {phases['alone']['probe']['p99_ms']:.1f} ms alone, "
        f"{phases['flood']['probe']['p99_ms']:.1f} ms during the flood"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=None, help="seconds per wrk run")
    parser.add_argument("--postgres", help="a scratch PostgreSQL URL (its tables are dropped)")
    parser.add_argument("--contention", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run `make bench-tools` (apt-get install -y wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.contention:
            contention(args.duration or 30, workdir)
            return
        duration = args.duration or 3
        sqlite_url = f"sqlite:///{workdir / 'b.sqlite3'}"
        summaries = {"SQLite": compare("SQLite", sqlite_url, args.rounds, duration, workdir)}
        if args.postgres:
            summaries["PostgreSQL"] = compare(
                "PostgreSQL", args.postgres, args.rounds, duration, workdir
            )
        print_summary(summaries)


if __name__ == "__main__":
    main()
