"""The design a Python team would otherwise write, one job per SMS in a PostgreSQL job queue
(PgQueuer), against broadcaster's batched dispatch, through the same gateway simulator.

(a) PgQueuer: a table of --messages SMS rows and one PgQueuer job per row, enqueued in bulk
    (`Queries.enqueue` with lists, --enqueue-batch jobs per call). Then --workers worker processes
    (a `QueueManager` each, with its entrypoint, `mode=drain`, `batch_size` and
    `max_concurrent_tasks` from the options) take the jobs; each job POSTs its one message to the
    GatewayAPI simulator (one recipient per request, as a job knows only its own message) and
    writes the gateway's id and status 'sent' back to its row. jobs/s counts from the moment the
    workers are told to start until the last one has drained the queue and flushed its logs.
(b) broadcaster: the same number of subscribers in a fresh database, one `broadcaster
    dispatcher` (GatewayAPI gateway, --max-batch recipients per request, rate limit far above
    the machine) and one alert over all of them; SMS/s counts from the alert's insert (so the
    fan-out is included) until nothing is left to submit.

Both use a fresh simulator with receipts held (they cost no CPU). Needs the `bench` extra:
`pip install -e '.[bench]'` (PgQueuer is not a runtime dependency).

    python bench/pgqueuer_compare.py [--messages 50000] [--workers 2] [--batch-size 25]
                                     [--concurrency 64] [--max-batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    TOKEN,
    ZONE,
    children,
    fresh_database,
    gateway_toml,
    get_json,
    postgres_version,
    report,
    run,
    seed_box,
    start_dispatcher,
    start_simulator,
)

from broadcaster.database import connect
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import parse_area

SCRIPT = str(Path(__file__).resolve())
RATE = 10_000_000  # far above anything the machine does: the limiter never waits
ENTRYPOINT = "send_sms"
MESSAGE = "Politiet: indbrud i området. Se noget? Ring 114."
CALLBACK = "http://127.0.0.1:9/v1/callbacks/primary"  # receipts are held, never posted
FIRST_MSISDN = 4530000000

# ------------------------------------------------------------------------------ (a) PgQueuer

CREATE_SMS = """
CREATE TABLE sms_messages (
    id                  bigint PRIMARY KEY,
    msisdn              bigint NOT NULL,
    status              text NOT NULL DEFAULT 'queued',
    gateway_message_id  text,
    sent_at             timestamptz
)
"""
FILL_SMS = """
INSERT INTO sms_messages (id, msisdn) SELECT g, $1::bigint + g - 1 FROM generate_series(1, $2) g
"""


async def pgqueuer_run(
    messages: int, workers: int, batch_size: int, concurrency: int, enqueue_batch: int
) -> dict[str, Any]:
    from pgqueuer import Queries

    url = await fresh_database("broadcaster_bench_pgqueuer")
    # A plain asyncpg connection: PgQueuer encodes its jsonb itself (our connect() adds a codec).
    conn = await asyncpg.connect(url)
    try:
        queries = Queries.from_asyncpg_connection(conn)
        await queries.install()
        await conn.execute(CREATE_SMS)
        await conn.execute(FILL_SMS, FIRST_MSISDN, messages)
        t0 = time.perf_counter()
        for start in range(0, messages, enqueue_batch):
            ids = range(start + 1, min(messages, start + enqueue_batch) + 1)
            payloads: list[bytes | None] = [
                json.dumps({"id": i, "msisdn": FIRST_MSISDN + i - 1}).encode() for i in ids
            ]
            await queries.enqueue([ENTRYPOINT] * len(payloads), payloads, [0] * len(payloads))
        enqueue_seconds = time.perf_counter() - t0
        await conn.execute("ANALYZE")
    finally:
        await conn.close()

    with children() as (started, log_dir):
        sim = start_simulator(started, log_dir, "--hold-receipts")
        argv = [SCRIPT, "--worker", "--url", url, "--sim", sim]
        argv += ["--batch-size", str(batch_size), "--concurrency", str(concurrency)]
        outputs = await _run_workers(argv, workers, log_dir)
        stats = get_json(f"{sim}/_sim/stats")
    conn = await connect(url)
    try:
        sent = await conn.fetchval("SELECT count(*) FROM sms_messages WHERE status = 'sent'")
        left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    finally:
        await conn.close()
    seconds = max(o["end"] for o in outputs) - min(o["start"] for o in outputs)
    return {
        "messages": messages,
        "workers": workers,
        "batch_size": batch_size,
        "max_concurrent_tasks_per_worker": concurrency,
        "enqueue_seconds": round(enqueue_seconds, 3),
        "enqueue_jobs_per_s": round(messages / enqueue_seconds, 1),
        "seconds": round(seconds, 3),
        "jobs_per_s": round(sent / seconds, 1),
        "jobs_per_s_including_enqueue": round(sent / (seconds + enqueue_seconds), 1),
        "sent_in_db": sent,
        "jobs_left_in_queue": left,
        "jobs_done_per_worker": [o["jobs"] for o in outputs],
        "simulator_requests": stats["requests"],
        "postgres": await postgres_version(url),
    }


def _open_logs(log_dir: Path, n: int) -> list[Any]:
    return [open(log_dir / f"pgqueuer-worker-{i}.log", "wb") for i in range(n)]


async def _run_workers(argv: list[str], workers: int, log_dir: Path) -> list[dict[str, Any]]:
    """Start the workers, let them all connect, start them at once, collect their figures."""
    children_: list[asyncio.subprocess.Process] = []
    logs = _open_logs(log_dir, workers)
    try:
        for log in logs:
            children_.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                )
            )
        for child in children_:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"a PgQueuer worker did not start; see {log_dir}")
        for child in children_:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        outputs = []
        for child in children_:
            out, _ = await child.communicate()
            if child.returncode != 0:
                raise RuntimeError(f"a PgQueuer worker failed ({child.returncode}); see {log_dir}")
            outputs.append(json.loads(out.decode().strip().splitlines()[-1]))
        return outputs
    finally:
        for child in children_:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
        for log in logs:
            log.close()


async def _worker(url: str, sim: str, batch_size: int, concurrency: int) -> None:
    """One PgQueuer worker process: a QueueManager draining the queue, one SMS per job."""
    import aiohttp
    from pgqueuer import Queries, QueueManager
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=4, max_size=10)
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=30),
    )
    headers = {"Authorization": f"Token {TOKEN}"}
    qm = QueueManager(Queries.from_asyncpg_connection(conn))
    done = 0

    @qm.entrypoint(ENTRYPOINT)
    async def send_sms(job: Job) -> None:
        nonlocal done
        assert job.payload is not None
        sms = json.loads(job.payload)
        body = {
            "sender": "POLITI",
            "message": MESSAGE,
            "recipients": [{"msisdn": sms["msisdn"]}],
            "callback_url": CALLBACK,
            "userref": "1",
        }
        async with http.post(f"{sim}/rest/mtsms", json=body, headers=headers) as r:
            answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"gateway answered {r.status}: {answer}")
        await pool.execute(
            "UPDATE sms_messages SET status = 'sent', gateway_message_id = $2, sent_at = now() "
            "WHERE id = $1",
            sms["id"],
            str(answer["ids"][0]),
        )
        done += 1

    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start = time.time()
    await qm.run(
        dequeue_timeout=timedelta(seconds=1),
        batch_size=batch_size,
        mode=QueueExecutionMode.drain,
        max_concurrent_tasks=concurrency,
    )
    end = time.time()
    await http.close()
    await pool.close()
    await conn.close()
    print(json.dumps({"start": start, "end": end, "jobs": done}), flush=True)


# ------------------------------------------------------------------------------ (b) broadcaster


async def broadcaster_run(
    messages: int, max_batch: int, gateway_concurrency: int, timeout: float
) -> dict[str, Any]:
    url = await fresh_database("broadcaster_bench_pgqueuer_ours")
    await seed_box(url, messages)
    with children() as (started, log_dir):
        sim = start_simulator(started, log_dir, "--hold-receipts")
        config = gateway_toml(
            log_dir / "gw.toml",
            sim,
            rate=RATE,
            max_batch=max_batch,
            concurrency=gateway_concurrency,
        )
        started.append(start_dispatcher(log_dir, url, config))
        conn = await connect(url)
        try:
            alert_id, _ = await create_alert(
                conn, NewAlert(MESSAGE, ZONE, parse_area(ZONE), "normal", None, None), None, None
            )
            deadline = time.time() + timeout
            status = "queued"
            while time.time() < deadline and status in ("queued", "dispatching"):
                await asyncio.sleep(0.05)
                status = await conn.fetchval("SELECT status FROM alerts WHERE id = $1", alert_id)
            row = await conn.fetchrow(
                """
                SELECT extract(epoch FROM a.completed_at - a.created_at) AS seconds,
                       extract(epoch FROM a.completed_at - min(d.sent_at)) AS after_first,
                       count(*) FILTER (WHERE d.status = 'sent') AS sent
                FROM alerts a JOIN deliveries d ON d.alert_id = a.id
                WHERE a.id = $1 GROUP BY a.id
                """,
                alert_id,
            )
        finally:
            await conn.close()
        stats = get_json(f"{sim}/_sim/stats")
    if row is None or row["seconds"] is None or row["sent"] != messages:
        raise RuntimeError(f"broadcast did not complete (alert {status}, {row})")
    seconds = float(row["seconds"])
    return {
        "messages": messages,
        "max_batch": max_batch,
        "gateway_concurrency": gateway_concurrency,
        "seconds": round(seconds, 3),
        "sms_per_s": round(messages / seconds, 1),
        "seconds_first_sent_to_all_sent": round(float(row["after_first"]), 3),
        "sent_in_db": row["sent"],
        "simulator_requests": stats["requests"],
    }


# ------------------------------------------------------------------------------ main


async def main(args: argparse.Namespace) -> None:
    ours = await broadcaster_run(args.messages, args.max_batch, args.gateway_concurrency, 1800)
    theirs = await pgqueuer_run(
        args.messages, args.workers, args.batch_size, args.concurrency, args.enqueue_batch
    )
    if theirs["sent_in_db"] != args.messages:
        raise RuntimeError(f"PgQueuer sent {theirs['sent_in_db']} of {args.messages}")
    ratio = ours["sms_per_s"] / theirs["jobs_per_s"]
    figures = {
        "pgqueuer": theirs,
        "broadcaster": ours,
        "ratio_broadcaster_to_pgqueuer": round(ratio, 1),
    }
    report(
        "pgqueuer_compare",
        figures,
        f"{args.messages:,} SMS: PgQueuer one job per SMS {theirs['jobs_per_s']:,.0f} jobs/s "
        f"({args.workers} workers, {args.concurrency} tasks each; enqueue "
        f"{theirs['enqueue_seconds']:.1f} s more), broadcaster batched "
        f"{ours['sms_per_s']:,.0f} SMS/s (fan-out included, {ours['max_batch']} per request): "
        f"{ratio:.1f}x",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2, help="PgQueuer worker processes")
    parser.add_argument("--batch-size", type=int, default=25, help="PgQueuer dequeue batch")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="PgQueuer max_concurrent_tasks per worker"
    )
    parser.add_argument("--enqueue-batch", type=int, default=5000, help="jobs per enqueue call")
    parser.add_argument("--max-batch", type=int, default=1000, help="broadcaster: per request")
    parser.add_argument("--gateway-concurrency", type=int, default=4, help="broadcaster")
    # Internal mode: a PgQueuer worker process.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--sim", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import uvloop

        uvloop.run(_worker(args.url, args.sim, args.batch_size, args.concurrency))
    else:
        run(main(args))
