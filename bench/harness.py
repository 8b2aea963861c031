"""What every benchmark needs: a fresh database on the configured server (embedded PostgreSQL
unless DATABASE_URL is set), seeded subscribers, child processes on free ports that are stopped
again, and a one-line JSON result plus a human-readable line."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from broadcaster import procs
from broadcaster.database import connect, resolve_url
from broadcaster.ingest.geo import SCALE
from broadcaster.migrate import apply_migrations

ROOT = Path(__file__).resolve().parents[1]
# No quiet hours: a benchmark measures sending whenever it is run (the service's default holds
# alerts other than emergencies from 22:00 to 07:00 Copenhagen time). The in-process
# dispatchers read this environment, and the child processes inherit it.
os.environ.setdefault("BROADCASTER_QUIET_HOURS_START", "00:00")
os.environ.setdefault("BROADCASTER_QUIET_HOURS_END", "00:00")
SECRET = "bench-webhook-secret-0123456789abcdef"
TOKEN = "bench-token"
# Everyone in the benchmarks lives inside this box around Hillerød; zones are the box itself.
BOX = (12.20, 55.85, 12.45, 56.00)
ZONE = {
    "type": "Polygon",
    "coordinates": [
        [[BOX[0], BOX[1]], [BOX[2], BOX[1]], [BOX[2], BOX[3]], [BOX[0], BOX[3]], [BOX[0], BOX[1]]]
    ],
}


def server_url() -> str:
    return resolve_url(
        os.environ.get("DATABASE_URL"), Path(os.environ.get("BROADCASTER_DATA_DIR", ROOT / ".data"))
    )


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def fresh_database(name: str) -> str:
    server = server_url()
    admin = await connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server, name)
    conn = await connect(url)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return url


async def seed_box(url: str, n: int, seed: int = 1) -> None:
    """n active subscribers, one location each, uniformly inside BOX (COPY, set-based)."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(BOX[0], BOX[2], n)
    lat = rng.uniform(BOX[1], BOX[3], n)
    conn = await connect(url)
    try:
        await conn.copy_records_to_table(
            "subscribers",
            columns=["id", "phone"],
            records=((i + 1, f"+453{i:07d}") for i in range(n)),
        )
        await conn.copy_records_to_table(
            "subscriber_locations",
            columns=["subscriber_id", "position"],
            records=((i + 1, (float(lon[i]) * SCALE, float(lat[i]) * SCALE)) for i in range(n)),
        )
        await conn.execute("SELECT setval('subscribers_id_seq', $1)", n)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def gateway_toml(
    path: Path,
    sim_url: str,
    *,
    rate: float,
    max_batch: int = 1000,
    concurrency: int = 4,
    name: str = "primary",
    kind: str = "gatewayapi",
) -> Path:
    path.write_text(
        f'[[gateways]]\nname = "{name}"\ntype = "{kind}"\nbase_url = "{sim_url}"\n'
        f'token = "{TOKEN}"\nwebhook_secret = "{SECRET}"\nrate_per_second = {rate}\n'
        f"max_batch = {max_batch}\nconcurrency = {concurrency}\n"
    )
    return path


@contextmanager
def children() -> Iterator[tuple[list[procs.Child], Path]]:
    """A list to put started children in, and a log directory; all are stopped on exit."""
    started: list[procs.Child] = []
    log_dir = Path(tempfile.mkdtemp(prefix="broadcaster-bench-"))
    try:
        yield started, log_dir
    finally:
        for child in reversed(started):
            child.stop()


def start_dispatcher(
    log_dir: Path, url: str, config: Path, name: str = "dispatcher"
) -> procs.Child:
    """A `broadcaster dispatcher` on `url` with the gateways of `config`, logging at info and
    polling every 0.2 s; returns once it says it started."""
    return procs.start(
        name,
        procs.broadcaster_argv("dispatcher"),
        env={
            "DATABASE_URL": url,
            "BROADCASTER_CONFIG": str(config),
            "BROADCASTER_LOG_LEVEL": "info",
            "BROADCASTER_POLL_INTERVAL": "0.2",
        },
        log_dir=log_dir,
        ready_line="dispatcher started",
    )


def start_simulator(started: list[procs.Child], log_dir: Path, *args: str) -> str:
    port = procs.free_port()
    started.append(
        procs.start(
            "simulator",
            procs.broadcaster_argv(
                "simulate-gateway",
                "--port",
                str(port),
                "--token",
                TOKEN,
                "--webhook-secret",
                SECRET,
                *args,
            ),
            env={},
            log_dir=log_dir,
            ready_line="listening on",
        )
    )
    return f"http://127.0.0.1:{port}"


def service_env(url: str, config: Path | None, env: dict[str, str] | None = None) -> dict[str, str]:
    """The settings of a `broadcaster api` (and of its dispatcher) on `url` with the gateways of
    `config` (None: none): a free port for the API, its public URL there, logging at warning;
    `env` added."""
    port = procs.free_port()
    settings = {
        "DATABASE_URL": url,
        "BROADCASTER_PORT": str(port),
        "BROADCASTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BROADCASTER_LOG_LEVEL": "warning",
    }
    if config is not None:
        settings["BROADCASTER_CONFIG"] = str(config)
    return {**settings, **(env or {})}


def start_api(started: list[procs.Child], log_dir: Path, env: dict[str, str]) -> str:
    """A `broadcaster api` with the settings `env` (service_env); returns its URL once /readyz
    answers."""
    api = env["BROADCASTER_PUBLIC_URL"]
    started.append(
        procs.start(
            "api",
            procs.broadcaster_argv("api"),
            env=env,
            log_dir=log_dir,
            ready_url=f"{api}/readyz",
        )
    )
    return api


@dataclass(frozen=True)
class Service:
    """The URLs of a started simulator and API."""

    sim: str
    api: str


def start_service(
    started: list[procs.Child],
    log_dir: Path,
    url: str,
    *,
    rate: float,
    sim_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Service:
    """The GatewayAPI simulator (with `sim_args`), `broadcaster api` and `broadcaster
    dispatcher` on free ports, as separate processes (the production layout). The gateway sends
    `rate` SMS/s in batches of up to 1000; both processes get the same settings (`env` added),
    so the dispatcher gives the simulator the API's callback URL and receipts go to the API as
    in production. The dispatcher logs at info."""
    sim = start_simulator(started, log_dir, *sim_args)
    config = gateway_toml(log_dir / "gw.toml", sim, rate=rate, max_batch=1000)
    settings = service_env(url, config, env)
    api = start_api(started, log_dir, settings)
    started.append(
        procs.start(
            "dispatcher",
            procs.broadcaster_argv("dispatcher"),
            env={**settings, "BROADCASTER_LOG_LEVEL": "info"},
            log_dir=log_dir,
            ready_line="dispatcher started",
        )
    )
    return Service(sim, api)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def backend_cpu(conn: Any) -> dict[int, float]:
    """CPU seconds so far of every server process working for this database (same host)."""
    pids = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    cpu = {r["pid"]: cpu_seconds(r["pid"]) for r in pids}
    return {pid: s for pid, s in cpu.items() if s is not None}


def bracketed(before: dict[str, Any], after: dict[str, Any], *keys: str) -> dict[str, Any]:
    """A ceiling measured just before and just after a figure: the after run's parameters,
    each rate in `keys` as the mean of the two runs, and `<key>_before_and_after` for the
    first key. On a shared machine the speed moves within minutes; one side alone skews the
    ratio."""
    merged = dict(after)
    for key in keys:
        merged[key] = round((before[key] + after[key]) / 2, 1)
    merged[f"{keys[0]}_before_and_after"] = [before[keys[0]], after[keys[0]]]
    return merged


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}


async def postgres_version(url: str) -> str:
    conn = await connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def report(name: str, figures: dict[str, Any], human: str) -> None:
    """One JSON line (for scripts) and one line for people."""
    print(json.dumps({"bench": name, **figures, "machine": machine()}), flush=True)
    print(f"{name}: {human}", flush=True)


def run(coro: Any) -> None:
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        sys.exit(130)
    except subprocess.SubprocessError as exc:
        sys.exit(f"{exc}")
