"""Helpers for the operators' tests: a running service with one alert broadcast through it, and
its /metrics read back and parsed."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from tests.stack import Stack

from broadcaster.auth import create_api_key
from broadcaster.seed import insert_subscribers, synthetic_subscribers

# Covers the whole district: every active subscriber gets the alert.
DISTRICT = {"type": "Circle", "center": [12.3111, 55.9267], "radius_m": 60_000}
FINAL = ("delivered", "failed", "expired", "cancelled")


@dataclass
class Scrape:
    families: dict[str, Metric]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`."""
        total = 0.0
        for family in self.families.values():
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def exposed_names(self) -> set[str]:
        """Every series name the service exports, as PromQL sees them (a histogram's _bucket,
        _sum and _count, a counter's _total and _created), samples or not."""
        names: set[str] = set()
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
            "gauge": ("",),
        }
        for family in self.families.values():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
        return names

    def label_values(self) -> set[str]:
        return {v for f in self.families.values() for s in f.samples for v in s.labels.values()}


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    return Scrape(families)


async def seed(pool: asyncpg.Pool, subscribers: int = 300) -> tuple[str, int]:
    """Subscribers around Hillerød and an API key; returns the key and the active count."""
    subs, locs = synthetic_subscribers(subscribers, seed=5)
    async with pool.acquire() as conn:
        await insert_subscribers(conn, subs, locs)
        key = await create_api_key(conn, "operators")
    return key, sum(1 for s in subs if s[3] == "active")


def start(stack: Stack, **env: str) -> None:
    stack.start_simulator("--receipt-delay-ms", "20", "--delivered-ratio", "0.9")
    stack.write_config(rate=20_000, max_batch=100)
    stack.start_service(**env)


async def broadcast(stack: Stack, key: str, timeout: float = 60) -> dict:
    """Create one alert for the district and wait until it is completed and every delivery
    is final (receipts in); returns its status."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        r = await http.post(
            "/v1/alerts",
            headers=headers,
            json={"message": "Politiet efterlyser vidner", "area": DISTRICT, "priority": "high"},
        )
        assert r.status_code == 202, r.text
        alert_id = r.json()["id"]
        deadline = time.monotonic() + timeout
        while True:
            status = (await http.get(f"/v1/alerts/{alert_id}", headers=headers)).json()
            counts = status["deliveries"]
            if (
                status["status"] == "completed"
                and sum(counts[s] for s in FINAL) == status["recipients"]
            ):
                return dict(status)
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.2)


def promtool_binary(name: str = "promtool") -> str:
    """The path of Prometheus's `promtool` or `prometheus` (Debian package `prometheus`). Missing,
    the test is skipped on a developer's machine and fails where BROADCASTER_REQUIRE_PROMETHEUS
    is set (`.ci/run` installs the package and sets it)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install prometheus)"
        if os.environ.get("BROADCASTER_REQUIRE_PROMETHEUS"):
            pytest.fail(message)
        pytest.skip(message)
    return path


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def promql_names(expr: str) -> set[str]:
    """The series names an expression reads: its identifiers that name our metrics or our
    recording rules, once string literals (label values) and range selectors are taken out."""
    bare = _RANGE.sub(" ", _STRING.sub(" ", expr))
    return {
        word
        for word in _IDENTIFIER.findall(bare)
        if word.startswith(("broadcaster_", "broadcaster:"))
    }
