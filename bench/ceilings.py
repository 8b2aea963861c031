"""The machine's own ceilings, measured in the same run, to read the other benchmarks against.

(a) claim+complete: a deliveries table filled by the real fan-out, drained by the real
    `queue.claim(conn, batch, ...)` followed by `Batch.finish(...)` (write-back and commit)
    with 'sent' outcomes (one gateway message id per batch, as GatewayAPI answers) and no HTTP
    at all; 1 and 2 worker processes (each its own pool, uvloop as in production), msg/s.
(b) HTTP: a bare aiohttp server answering a fixed JSON body (it reads the request body, parses
    nothing) and a bare aiohttp client, each in its own process with uvloop; per message (one
    small POST per message, --concurrency in flight) and batched (--batch recipients per POST,
    bodies pre-encoded), req/s and msg/s.
(c) API: a FastAPI app with one no-op POST route under uvicorn (uvloop + httptools, as
    production), hammered by the same aiohttp client process, req/s.

    python bench/ceilings.py [--claim-rows 200000] [--batch 1000] [--requests 20000]
                             [--batched-requests 500] [--api-requests 10000] [--concurrency 32]

The measuring functions (`claim_complete_ceiling`, `http_ceiling`, `api_ceiling`) can be
imported by the other benchmarks so that a ceiling is measured in their own run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ZONE,
    children,
    fresh_database,
    postgres_version,
    report,
    run,
    seed_box,
)

from broadcaster import procs
from broadcaster.database import connect
from broadcaster.dispatch.fanout import fan_out_next
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import parse_area

SCRIPT = str(Path(__file__).resolve())
MESSAGE = "Politiet: indbrud i området. Se noget? Ring 114."

# ------------------------------------------------------------------------------ (a) claim+complete


async def fill_deliveries(url: str, n: int) -> int:
    """Empty the deliveries table and fill it again by the real fan-out of one alert over ZONE;
    seeds n subscribers inside ZONE first when the database has none. Returns the row count."""
    conn = await connect(url)
    try:
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM subscribers)"):
            await conn.close()
            await seed_box(url, n)
            conn = await connect(url)
        await conn.execute("TRUNCATE deliveries")
        await create_alert(
            conn, NewAlert(MESSAGE, ZONE, parse_area(ZONE), "normal", None, None), None, None
        )
        result = await fan_out_next(conn)
        assert result is not None
        return result.recipients
    finally:
        await conn.close()


async def claim_complete_ceiling(
    url: str, n: int, workers: int = 1, *, batch: int = 1000, tasks: int = 1
) -> float:
    """msg/s of claim + complete ('sent') over a freshly fanned-out deliveries table, drained by
    `workers` processes with `tasks` loops each (separate connections). `url` is a migrated
    database; it is seeded with n subscribers when it has none, and its deliveries are
    replaced."""
    return (await claim_complete_detail(url, n, workers, batch=batch, tasks=tasks))["msg_per_s"]


async def claim_complete_detail(
    url: str, n: int, workers: int = 1, *, batch: int = 1000, tasks: int = 1
) -> dict[str, Any]:
    """`claim_complete_ceiling` with the breakdown: rows, seconds, time in claim and complete."""
    rows = await fill_deliveries(url, n)
    procs_ = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--worker",
            "claim",
            "--url",
            url,
            "--name",
            f"ceiling-{i}",
            "--batch",
            str(batch),
            "--tasks",
            str(tasks),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(workers)
    ]
    try:
        for p in procs_:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"claim worker did not start: {line!r}")
        for p in procs_:  # all at once: they connected already
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        outputs = [json.loads((await p.communicate())[0]) for p in procs_]
    finally:
        for p in procs_:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
    done = sum(o["rows"] for o in outputs)
    if done != rows:
        raise RuntimeError(f"claimed {done} of {rows} deliveries")
    seconds = max(o["end"] for o in outputs) - min(o["start"] for o in outputs)
    busy = sum(o["end"] - o["start"] for o in outputs)
    return {
        "rows": rows,
        "workers": workers,
        "tasks_per_worker": tasks,
        "batch": batch,
        "seconds": round(seconds, 3),
        "msg_per_s": round(rows / seconds, 1),
        "claim_share": round(sum(o["claim_s"] for o in outputs) / busy, 3),
        "complete_share": round(sum(o["complete_s"] for o in outputs) / busy, 3),
        "claim_ms_mean": round(
            1000 * sum(o["claim_s"] for o in outputs) / max(1, sum(o["claims"] for o in outputs)),
            2,
        ),
    }


async def _claim_worker(url: str, name: str, batch: int, tasks: int) -> None:
    from broadcaster.database import create_pool
    from broadcaster.dispatch import queue
    from broadcaster.dispatch.queue import Outcome

    pool = await create_pool(url, min_size=tasks, max_size=tasks)
    await pool.fetchval("SELECT 1")
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    totals = {"rows": 0, "claims": 0, "claim_s": 0.0, "complete_s": 0.0}
    message_ids = itertools.count(1)

    async def loop() -> None:
        async with pool.acquire() as conn:
            while True:
                t0 = time.perf_counter()
                claimed = await queue.claim(conn, batch, 120.0)
                t1 = time.perf_counter()
                totals["claims"] += 1
                totals["claim_s"] += t1 - t0
                if not claimed.rows:
                    return
                message_id = f"{name}-{next(message_ids)}"
                await claimed.finish(
                    [Outcome(c.id, "sent", "primary", message_id) for c in claimed.rows]
                )
                totals["complete_s"] += time.perf_counter() - t1
                totals["rows"] += len(claimed)

    start = time.time()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    end = time.time()
    await pool.close()
    print(json.dumps({**totals, "start": start, "end": end}), flush=True)


# ------------------------------------------------------------------------------ (b), (c) HTTP


def _single_body() -> bytes:
    return json.dumps(
        {
            "sender": "POLITI",
            "message": MESSAGE,
            "recipients": [{"msisdn": 4530000001}],
            "callback_url": "http://127.0.0.1:8000/v1/callbacks/primary",
            "userref": "1",
        }
    ).encode()


def _batch_body(recipients: int) -> bytes:
    return json.dumps(
        {
            "sender": "POLITI",
            "message": MESSAGE,
            "recipients": [{"msisdn": 4530000000 + i} for i in range(recipients)],
            "callback_url": "http://127.0.0.1:8000/v1/callbacks/primary",
            "userref": "1",
        }
    ).encode()


async def _serve_http(port: int) -> None:
    from aiohttp import web

    answer = json.dumps({"ids": [1], "usage": {"currency": "EUR", "total_cost": 0.0}}).encode()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/send", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _api_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/noop")
    async def noop() -> dict[str, bool]:
        return {"ok": True}

    return app


def _serve_api(port: int) -> None:
    import uvicorn

    uvicorn.run(
        _api_app(),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        log_config=None,
    )


async def _http_client(
    target: str, requests: int, concurrency: int, recipients: int, client: str = "aiohttp"
) -> None:
    """POST `requests` times to target, `concurrency` at a time; prints seconds as JSON."""
    body = _single_body() if recipients == 1 else _batch_body(recipients)
    headers = {"Content-Type": "application/json"}
    if client == "lean":
        from loadgen import LoadGenerator, encode_post

        request = encode_post(target, body, list(headers.items()))
        async with LoadGenerator(target, concurrency) as generator:
            await generator.run([request] * min(requests, concurrency * 20))  # warm-up
            seconds, _, failed, _ = await generator.run([request] * requests)
        if failed:
            raise RuntimeError(f"{target} answered {failed} requests with other than 2xx")
        print(json.dumps({"seconds": seconds}), flush=True)
        return
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.post(target, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{target} answered {r.status}")

        async def loop(counter: itertools.count[int], limit: int) -> None:
            while next(counter) < limit:
                await one()

        # Warm-up: open the connections, let the server settle.
        warm = min(requests, concurrency * 20)
        warm_counter = itertools.count()
        await asyncio.gather(*(loop(warm_counter, warm) for _ in range(concurrency)))
        counter = itertools.count()
        start = time.perf_counter()
        await asyncio.gather(*(loop(counter, requests) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds}), flush=True)


async def _run_client(
    target: str, requests: int, concurrency: int, recipients: int, client: str = "aiohttp"
) -> float:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "--worker",
        "http-client",
        "--target",
        target,
        "--requests",
        str(requests),
        "--concurrency",
        str(concurrency),
        "--recipients",
        str(recipients),
        "--client",
        client,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"HTTP client failed (status {child.returncode})")
    return float(json.loads(out)["seconds"])


def _start_server(started: list[procs.Child], log_dir: Path, kind: str) -> str:
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, SCRIPT, "--serve", kind, "--port", str(port)]
    if kind == "http":
        started.append(
            procs.start("http-server", argv, env={}, log_dir=log_dir, ready_line="listening on")
        )
        return f"{base}/send"
    started.append(
        procs.start("api-server", argv, env={}, log_dir=log_dir, ready_url=f"{base}/healthz")
    )
    return f"{base}/noop"


async def http_ceiling(
    requests: int, concurrency: int = 32, recipients: int = 1
) -> dict[str, float]:
    """Bare aiohttp client -> bare aiohttp server, `recipients` per POST; req/s and msg/s."""
    with children() as (started, log_dir):
        target = _start_server(started, log_dir, "http")
        seconds = await _run_client(target, requests, concurrency, recipients)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "recipients_per_request": recipients,
        "req_per_s": round(requests / seconds, 1),
        "msg_per_s": round(requests * recipients / seconds, 1),
    }


async def api_ceiling(
    requests: int, concurrency: int = 32, client: str = "aiohttp"
) -> dict[str, float]:
    """Load generator (aiohttp, or bench/loadgen.py with client='lean') -> FastAPI no-op POST
    under uvicorn (uvloop, httptools); req/s."""
    with children() as (started, log_dir):
        target = _start_server(started, log_dir, "api")
        seconds = await _run_client(target, requests, concurrency, 1, client)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "req_per_s": round(requests / seconds, 1),
    }


# ------------------------------------------------------------------------------ main


async def main(args: argparse.Namespace) -> None:
    url = await fresh_database("broadcaster_bench_ceilings")
    await seed_box(url, args.claim_rows)
    claim = {}
    for workers in (1, 2):
        claim[f"workers_{workers}"] = await claim_complete_detail(
            url, args.claim_rows, workers, batch=args.batch, tasks=args.tasks
        )
    single = await http_ceiling(args.requests, args.concurrency, 1)
    batched = await http_ceiling(args.batched_requests, args.batched_concurrency, args.batch)
    api = await api_ceiling(args.api_requests, args.concurrency)
    figures = {
        "claim_complete": claim,
        "http_per_message": single,
        "http_batched": batched,
        "api_noop": api,
        "postgres": await postgres_version(url),
    }
    c1, c2 = claim["workers_1"]["msg_per_s"], claim["workers_2"]["msg_per_s"]
    report(
        "ceilings",
        figures,
        f"claim+complete {c1:,.0f} msg/s (1 worker), {c2:,.0f} msg/s (2 workers); "
        f"HTTP per message {single['req_per_s']:,.0f} req/s, batched "
        f"{batched['req_per_s']:,.0f} req/s = {batched['msg_per_s']:,.0f} msg/s; "
        f"FastAPI no-op {api['req_per_s']:,.0f} req/s",
    )


def _worker_main(args: argparse.Namespace) -> None:
    import uvloop

    if args.worker == "claim":
        uvloop.run(_claim_worker(args.url, args.name, args.batch, args.tasks))
    elif args.worker == "http-client":
        uvloop.run(
            _http_client(args.target, args.requests, args.concurrency, args.recipients, args.client)
        )
    elif args.serve == "http":
        uvloop.run(_serve_http(args.port))
    elif args.serve == "api":
        _serve_api(args.port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claim-rows", type=int, default=200_000, help="deliveries to drain")
    parser.add_argument("--batch", type=int, default=1000, help="claim size and recipients/POST")
    parser.add_argument("--tasks", type=int, default=1, help="claim loops per worker process")
    parser.add_argument("--requests", type=int, default=20_000, help="per-message POSTs")
    parser.add_argument("--batched-requests", type=int, default=500, help="batched POSTs")
    parser.add_argument("--batched-concurrency", type=int, default=4)
    parser.add_argument("--api-requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    # Internal modes: the child processes this script starts.
    parser.add_argument("--worker", choices=["claim", "http-client"], help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=["http", "api"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--client", default="aiohttp", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="ceiling", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--recipients", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker or args.serve:
        _worker_main(args)
    else:
        if args.quick:
            args.claim_rows, args.requests = 20_000, 2_000
            args.batched_requests, args.api_requests = 50, 2_000
        run(main(args))
