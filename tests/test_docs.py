"""The README documents every metric both processes expose and every configuration variable."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

from dispatcher import metrics as dispatcher_metrics
from partner_api import config as config_module
from partner_api.config import ROOT

README = (ROOT / "README.md").read_text()


def exposed_names(registry) -> set[str]:
    names = set()
    for family in registry.collect():
        if family.name.startswith("partner_api_"):
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def test_every_metric_is_in_the_readme_table(client, db):
    client.get("/healthz")  # the API's request series exist once a request was answered
    names = exposed_names(REGISTRY) | exposed_names(dispatcher_metrics.REGISTRY)
    assert "partner_api_deliveries_due" in names and "partner_api_http_requests_total" in names
    documented = set(re.findall(r"^\| `(partner_api_\w+)", README, re.MULTILINE))
    assert names == documented


def test_every_configuration_variable_is_in_the_readme_table():
    documented = set(re.findall(r"^\| `([A-Z_]+)`", README, re.MULTILINE))
    assert set(config_module._VARIABLES) <= documented
