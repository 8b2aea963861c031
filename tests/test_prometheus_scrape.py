"""A real Prometheus (Debian package `prometheus`) on 127.0.0.1 scrapes the running service, with
the shipped rules loaded, and answers a query for one of its metrics through its HTTP API. Stopped
by PID."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
from tests import ops_support
from tests.stack import Stack

from broadcaster import procs

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "broadcaster-rules.yml"


async def test_prometheus_scrapes_the_service_and_answers_a_query(
    stack: Stack, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    binary = ops_support.promtool_binary("prometheus")
    key, _ = await ops_support.seed(pool, subscribers=100)
    ops_support.start(stack)
    target = stack.api_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: broadcaster\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = procs.free_port()
    prometheus = procs.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        env={},
        log_dir=stack.log_dir,
        ready_url=f"http://127.0.0.1:{port}/-/ready",
    )
    stack.children.append(prometheus)  # stopped by PID in teardown, even if an assert fails
    async with httpx.AsyncClient(base_url=stack.api_url) as api:
        r = await api.post(
            "/v1/alerts",
            headers={"Authorization": f"Bearer {key}"},
            json={"message": "Test", "area": ops_support.DISTRICT, "priority": "emergency"},
        )
        assert r.status_code == 202, r.text
    query = 'broadcaster_alerts_created_total{priority="emergency",source="json"}'
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as prom:
        deadline = time.monotonic() + 30
        while True:
            answer = (await prom.get("/api/v1/query", params={"query": query})).json()
            assert answer["status"] == "success", answer
            result = answer["data"]["result"]
            if result and float(result[0]["value"][1]) == 1:
                break
            assert time.monotonic() < deadline, answer
            await asyncio.sleep(0.3)
        assert result[0]["metric"]["job"] == "broadcaster"
        targets = (await prom.get("/api/v1/targets")).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
        # The shipped rules loaded, and their recording rule evaluates against live data.
        groups = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
        assert [g["name"] for g in groups] == ["broadcaster"]
        assert all(r["health"] != "err" for g in groups for r in g["rules"])
    assert prometheus.stop() == 0
