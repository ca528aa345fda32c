"""The docs cannot drift from the code: every metric, configuration variable, admin command and
attempt error kind is documented; the README stays a short front door linking every manual page;
the production recipe runs in order and the CLI lines on a server read the services' settings."""

from __future__ import annotations

import re

import click
from prometheus_client import REGISTRY

from dispatcher import metrics as dispatcher_metrics
from partner_api import config as config_module
from partner_api.config import ROOT
from partner_api.delivery.outcomes import AttemptError
from partner_api.delivery.shares import SharePolicy

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
BENCH_README = ROOT / "bench" / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def read(name: str) -> str:
    return (ROOT / name).read_text()


def section(text: str, heading: str) -> str:
    """The body of a `## heading` section, up to the next heading of that level."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def exposed_names(registry) -> set[str]:
    names = set()
    for family in registry.collect():
        if family.name.startswith("partner_api_"):
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def scraped_names(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (partner_api_\w+) ", text, re.M))


def test_every_metric_is_in_the_production_metrics_table(client, db):
    client.get("/healthz")  # the API's request series exist once a request was answered
    # The API's /metrics adds the queue gauges, read at scrape time, to its registry's series.
    api = scraped_names(client.get("/metrics").get_data(as_text=True))
    names = exposed_names(REGISTRY) | exposed_names(dispatcher_metrics.REGISTRY) | api
    assert {"partner_api_database_up", "partner_api_deliveries_due"} <= api
    assert "partner_api_http_requests_total" in names
    documented = set(re.findall(r"^\| `(partner_api_\w+)", read("docs/production.md"), re.M))
    assert names == documented


def test_the_metrics_table_lists_exactly_the_attempt_outcome_labels():
    [row] = re.findall(
        r"^\| `partner_api_delivery_attempts_total\{outcome\}` \|.*$",
        read("docs/production.md"),
        re.M,
    )
    meaning = row.split("|")[4]
    assert re.findall(r"`([a-z_]+)`", meaning) == list(dispatcher_metrics.OUTCOMES)


def test_every_configuration_variable_is_in_the_configuration_table():
    documented = set(re.findall(r"^\| `([A-Z_]+)`", read("docs/configuration.md"), re.M))
    assert set(config_module._VARIABLES) <= documented


def test_the_partner_docs_list_exactly_the_attempt_error_kinds():
    audit = section(read("docs/partners.md"), "The failure audit")
    documented = re.findall(r"^\| `([a-z_]+)` \|", audit, re.M)
    assert documented == [kind.value for kind in AttemptError]


def test_the_sharing_rules_state_the_limits_the_code_applies():
    rules = " ".join(section(read("docs/architecture.md"), "How senders are shared").split())
    ten, three = SharePolicy(10), SharePolicy(3)
    stated = {
        "failing and slow": re.search(r"`max\(1, senders // 2\)`: (\d+) of 10", rules),
        "reserve": re.search(r"`max\(1, senders // 4\)`: (\d+) of 10, so (\d+) of 10", rules),
        "room for new": re.search(r"\((\d+) of 10\) lies room", rules),
        "room with 3": re.search(r"such room \((\d+) of 3\)", rules),
    }
    assert all(stated.values()), stated
    assert int(stated["failing and slow"][1]) == ten.suspect_budget
    assert int(stated["reserve"][1]) == ten.reserve
    assert int(stated["reserve"][2]) == ten.unproven_budget
    assert int(stated["room for new"][1]) == ten.unproven_budget - ten.suspect_budget
    assert int(stated["room with 3"][1]) == three.unproven_budget - three.suspect_budget
    assert SharePolicy(2).unproven_budget == SharePolicy(2).suspect_budget  # "With 2 … none"


def test_the_readme_is_a_short_front_door():
    assert len(README.read_text().splitlines()) <= 200


def test_the_readme_links_every_docs_page_and_the_benchmarks():
    assert DOCS, "docs/ holds the manual"
    assert BENCH_README.is_file()
    linked = set(LINK.findall(README.read_text()))
    for page in [*DOCS, BENCH_README]:
        assert str(page.relative_to(ROOT)) in linked, page


def anchors(page) -> set[str]:
    """The anchors GitHub gives a Markdown page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_in_the_docs_points_to_an_existing_file_and_heading():
    for page in [README, *DOCS, BENCH_README]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            assert linked.exists(), f"{page.relative_to(ROOT)}: {target}"
            if anchor:
                assert anchor in anchors(linked), f"{page.relative_to(ROOT)}: {target}"


def test_the_operating_table_lists_exactly_the_admin_commands(app):
    """`demo-key` is `make run`'s, described under the table rather than in it; `openapi` is
    flask-smorest's own."""
    table = re.findall(
        r"^\| `flask ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", read("docs/operating.md"), re.M
    )
    commands = set()
    for name, command in app.cli.commands.items():
        if name == "openapi":
            continue
        if isinstance(command, click.Group):
            commands |= {f"{name} {sub}" for sub in command.commands}
        elif name != "demo-key":
            commands.add(name)
    assert sorted(table) == sorted(commands)


SHELL_BLOCK = re.compile(r"^```(?:sh|console)\n(.*?)^```", re.M | re.S)
ENV_FILE = "/etc/partner-api/env"
STATE_DIRECTORY = "/var/lib/partner-api"


def shell_lines(text: str) -> list[str]:
    return [line for block in SHELL_BLOCK.findall(text) for line in block.splitlines()]


def test_the_production_recipe_creates_the_state_directory_before_init_db():
    """init-db runs as the service user and creates a SQLite database in the state directory,
    which that user cannot create under /var/lib: the recipe makes it first, theirs, 0700."""
    lines = shell_lines(section(read("docs/production.md"), "Deploy"))
    first_init_db = next(i for i, line in enumerate(lines) if re.search(r"\binit-db\b", line))
    creates = [
        i
        for i, line in enumerate(lines)
        if re.match(r"\s*(install -d|mkdir)\b", line)
        and line.split("#")[0].rstrip().endswith(STATE_DIRECTORY)
    ]
    assert creates and creates[0] < first_init_db, "the state directory is made before init-db"
    made = lines[creates[0]]
    assert re.search(r"-m 0?700\b", made) and "-o partner-api" in made, made


def test_cli_lines_on_a_server_read_the_services_environment_file():
    """On a server the CLI is given the services' settings with Flask's `-e`, never a sourced
    file or none (it would read whatever DATABASE_URL the shell has): every line run as the
    service user, and every line of the production page."""
    server_lines = []
    for page in [README, *DOCS]:
        for line in shell_lines(page.read_text()):
            if not re.search(r"\bflask\b", line):
                continue
            assert not re.search(rf"\. {ENV_FILE}\b", line), f"{page.name}: {line}"
            if "sudo -u partner-api" in line or page.name == "production.md":
                server_lines.append((page.name, line))
    assert {name for name, _ in server_lines} >= {"production.md", "operating.md"}
    for name, line in server_lines:
        assert f"--app wsgi -e {ENV_FILE} " in line, f"{name}: {line}"
