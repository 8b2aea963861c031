"""The Grafana dashboard and the Prometheus rules shipped in deploy/ and k8s/: every series they
read is one the running service exports, the PrometheusRule carries the plain file's rules, and
the rules pass `promtool check rules` and their unit tests (`promtool test rules`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from tests import ops_support
from tests.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "broadcaster.json"
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "broadcaster-rules.yml"
PROMETHEUS_RULE = ROOT / "k8s" / "base" / "prometheusrule.yaml"


def dashboard_queries() -> list[str]:
    def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [p for item in items for p in (item, *panels(item.get("panels", [])))]

    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in panels(doc["panels"]) for t in p.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promql_names_reads_metric_names_only() -> None:
    expr = (
        'sum by (gateway) (rate(broadcaster_deliveries_total{status="broadcaster_x"}[5m])) '
        "/ ignoring(instance) broadcaster:queue_depth:total > 0.2"
    )
    assert ops_support.promql_names(expr) == {
        "broadcaster_deliveries_total",
        "broadcaster:queue_depth:total",
    }


async def test_every_series_the_dashboard_and_rules_read_is_exported(stack: Stack) -> None:
    ops_support.start(stack)
    exported = (await ops_support.scrape(stack.api_url)).exposed_names()
    recorded = {r["record"] for r in rules() if "record" in r}
    queries = dashboard_queries()
    assert len(queries) >= 20
    for expr in queries + [r["expr"] for r in rules()]:
        names = ops_support.promql_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - exported - recorded
        assert not unknown, f"{expr!r} reads series the service does not export: {unknown}"
    # The panels the issue asks for are there.
    titles = " | ".join(
        p["title"] for p in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    ).lower()
    for wanted in (
        "throughput per gateway",
        "success ratio",
        "queue depth",
        "oldest due",
        "first",
        "receipt latency",
        "errors",
        "api latency",
    ):
        assert wanted in titles, wanted


def test_the_prometheusrule_carries_the_plain_rules() -> None:
    plain = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"] == plain
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts >= {
        "BroadcasterGatewayErrorRatioHigh",
        "BroadcasterQueueBacklogGrowing",
        "BroadcasterOldestDueDeliveryTooOld",
        "BroadcasterNoLiveDispatcher",
        "BroadcasterReceiptsFailing",
        "BroadcasterCircuitOpen",
        "BroadcasterApi5xx",
    }


def test_rules_pass_promtool() -> None:
    promtool = ops_support.promtool_binary()
    for argv in (
        [promtool, "check", "rules", RULES.name],
        [promtool, "test", "rules", "broadcaster-rules.test.yml"],
    ):
        done = subprocess.run(argv, cwd=RULES_DIR, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    # Every alert has a unit test.
    tests = (RULES_DIR / "broadcaster-rules.test.yml").read_text(encoding="utf-8")
    for rule in rules():
        if "alert" in rule:
            assert f"alertname: {rule['alert']}" in tests, rule["alert"]
