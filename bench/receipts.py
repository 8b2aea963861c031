"""Delivery receipts committed per second: GatewayAPI HTTP callbacks into one API process, and
SMPP deliver_sm into one dispatcher.

(a) HTTP. A fresh database with --receipts subscribers and as many deliveries in state 'sent'
    through gateway 'primary', GatewayAPI style (one message id per 1000 recipients), made with
    set-based SQL; one `broadcaster api` process with a gatewayapi gateway 'primary' and its
    webhook secret; a load generator in its own process (--concurrency keep-alive connections
    with one request in flight each, tokens signed and requests encoded before the clock
    starts) POSTs one JWT-signed receipt per delivery to /v1/callbacks/primary. Each answer
    comes after the receipt's transaction committed. The load generator is bench/loadgen.py
    (--client lean, the default), which spends about 13 us per request; an aiohttp client
    (--client aiohttp) spends about 65 us, as much as the API itself, so on 2 cores it takes
    the CPU the API and PostgreSQL would have and the figure measures the client as much as
    the server (docs/benchmarks.md gives both).
    Measured as the ceiling is: the first min(receipts, 20 x concurrency) receipts warm up (open
    the connections, let the server settle) untimed, then receipts/s is counted over the rest,
    from the first POST to the last answer; a count of 'delivered' deliveries confirms all of
    them. Next to it, in the same run: a FastAPI no-op POST route under the same server stack
    and client (bench/ceilings.api_ceiling), the ceiling of one API process, measured just
    before and just after the receipts (the mean of the two is the ceiling).
(b) SMPP. A broadcast to --smpp-receipts subscribers through an 'smpp' gateway to the SMSC
    simulator (SmscSimulator, receipts held) and one `broadcaster dispatcher`; once every
    delivery is 'sent', the receipts are released and the database is polled until every
    delivery is 'delivered'. The dispatcher commits them through its receipt sink in batches
    (SmppAdapter.receipt_batch, up to receipt_concurrency batches committing at once) and
    answers each deliver_sm after its batch committed; the simulator keeps --smsc-window
    deliver_sm unanswered at most (SmscOptions.receipt_window): receipts/s is about that window
    divided by the time from the simulator's send to the dispatcher's answer. The default
    window is 1000 (SMSC_WINDOW): SMSCs let an operator set an ESME account's window, and 1000
    lets two full batches of 500 commit while the next arrive. CPU per receipt is reported for
    the dispatcher, the simulator and the dispatcher's PostgreSQL backends (on 2 cores, 20,000
    receipts/s needs at most 100 us in all). Next to it, in the same run: the same simulator
    and SmppAdapter in a client process whose sink stores nothing (smpp_ceiling), the most the
    dispatcher could reach with this simulator, and a floor of what the simulator can emit.

    python bench/receipts.py [--receipts 50000] [--concurrency 64] [--api-requests 20000]
                             [--client lean|aiohttp] [--smpp-receipts 50000]
                             [--smsc-window 1000 ...] [--only http|smpp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    SECRET,
    ZONE,
    backend_cpu,
    bracketed,
    children,
    cpu_seconds,
    fresh_database,
    gateway_toml,
    postgres_version,
    report,
    run,
    seed_box,
    service_env,
    start_api,
    start_dispatcher,
)

from broadcaster import procs
from broadcaster.database import connect
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import parse_area

SCRIPT = str(Path(__file__).resolve())
PER_MESSAGE_ID = 1000  # GatewayAPI: one id per message object of up to 1000 recipients
FIRST_MSISDN = 4530000000  # harness.seed_box numbers subscribers +4530000000, +4530000001, ...
SMPP_SYSTEM_ID, SMPP_PASSWORD = "bench", "benchpw"  # SMPP passwords are at most 8 characters
# deliver_sm the simulated SMSC keeps unanswered (its window towards us). SMSCs make this
# configurable per ESME account; 1000 is within what they allow, and it lets the dispatcher
# have several batches committing at once (see the docstring).
SMSC_WINDOW = 1000

# ------------------------------------------------------------------------------ (a) HTTP

# Every subscriber got a delivery of one alert, accepted by 'primary' under one id per 1000.
SEED_SENT = """
WITH alert AS (
    INSERT INTO alerts (message, area, priority, status, recipients, fanned_out_at)
    VALUES ('bench', '{}'::jsonb, 2, 'dispatching', (SELECT count(*) FROM subscribers), now())
    RETURNING id
)
INSERT INTO deliveries (alert_id, subscriber_id, priority, status, attempts, gateway,
                        gateway_message_id, sent_at)
SELECT alert.id, s.id, 2, 'sent', 1, 'primary', ((s.id - 1) / $1 + 1)::text, now()
FROM alert, subscribers s
"""


async def http_receipts(receipts: int, concurrency: int, client: str) -> dict[str, Any]:
    url = await fresh_database("broadcaster_bench_receipts")
    await seed_box(url, receipts)
    conn = await connect(url)
    try:
        await conn.execute(SEED_SENT, PER_MESSAGE_ID)
        await conn.execute("ANALYZE deliveries")
    finally:
        await conn.close()
    with children() as (started, log_dir):
        # The gateway's base_url is never called: the API only receives callbacks.
        config = gateway_toml(log_dir / "gw.toml", "http://127.0.0.1:9", rate=1000)
        api = start_api(started, log_dir, service_env(url, config))
        api_pid = started[-1].pid
        conn = await connect(url)
        try:
            cpu0 = (_cpu_or_zero(api_pid), await backend_cpu(conn))
            out = await _subprocess_json(
                SCRIPT,
                "--load-generator",
                "--target",
                f"{api}/v1/callbacks/primary",
                "--receipts",
                str(receipts),
                "--concurrency",
                str(concurrency),
                "--client",
                client,
            )
            cpu1 = (_cpu_or_zero(api_pid), await backend_cpu(conn))
        finally:
            await conn.close()
    conn = await connect(url)
    try:
        delivered = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        )
        stored = await conn.fetchval("SELECT count(*) FROM delivery_receipts WHERE applied")
    finally:
        await conn.close()
    seconds, total = out["seconds"], out["seconds"] + out["warmup_seconds"]
    backends = sum(t - cpu0[1].get(pid, 0.0) for pid, t in cpu1[1].items())
    api_cpu = cpu1[0] - cpu0[0]
    if delivered != receipts:
        raise RuntimeError(f"only {delivered} of {receipts} receipts were committed")
    return {
        "receipts": receipts,
        "concurrency": concurrency,
        "warmup_receipts": out["warmup"],
        "answered_2xx": out["ok"],
        "answered_other": out["failed"],
        "delivered_in_db": delivered,
        "receipts_applied_in_db": stored,
        "seconds": round(seconds, 3),
        "receipts_per_s": round(out["timed"] / seconds, 1),
        "latency_ms": out["latency_ms"],
        # CPU cores kept busy while the receipts came in, warm-up included (the load generator
        # includes its signing of every receipt before the clock started), and CPU per receipt.
        "cpu_cores_busy": {
            "api": round(api_cpu / total, 2),
            "postgres_backends": round(backends / total, 2),
        },
        "cpu_us_per_receipt": {
            "api": round(1e6 * api_cpu / receipts, 1),
            "postgres_backends": round(1e6 * backends / receipts, 1),
        },
        "load_generator": client,
        # CPU of the load generator per receipt while timed (signing is before the clock).
        "load_generator_cpu_us_per_receipt": round(1e6 * out["cpu_seconds"] / out["timed"], 1),
        "postgres": await postgres_version(url),
    }


def _signed_receipts(n: int) -> list[tuple[bytes, str]]:
    """(body, X-Gwapi-Signature) per delivery, as the GatewayAPI simulator signs them."""
    import jwt

    now = int(time.time())
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about short HMAC keys
        for i in range(n):
            payload = {
                "id": i // PER_MESSAGE_ID + 1,
                "msisdn": FIRST_MSISDN + i,
                "status": "DELIVERED",
                "time": now,
            }
            body = json.dumps(payload).encode()
            out.append((body, jwt.encode(payload, SECRET, algorithm="HS256")))
    return out


async def _load_generator(target: str, receipts: int, concurrency: int, client: str) -> None:
    """POST every receipt once, `concurrency` in flight, the way bench/ceilings.py's client
    hammers the no-op route (warm-up first, then the timed part); prints a JSON line."""
    signed = _signed_receipts(receipts)
    warm = min(receipts, concurrency * 20)
    if client == "lean":
        from loadgen import LoadGenerator, encode_post

        requests = [
            encode_post(
                target, body, [("Content-Type", "application/json"), ("X-Gwapi-Signature", token)]
            )
            for body, token in signed
        ]
        async with LoadGenerator(target, concurrency) as generator:
            warmup_seconds, ok0, failed0, _ = await generator.run(requests[:warm])
            cpu0 = time.process_time()
            seconds, ok, failed, latencies = await generator.run(requests[warm:])
            cpu = time.process_time() - cpu0
        ok, failed = ok + ok0, failed + failed0
    else:
        warmup_seconds, seconds, ok, failed, latencies, cpu = await _aiohttp_load(
            target, signed, warm, concurrency
        )
    latencies.sort()
    pct = {
        f"p{q}": round(1000 * latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))], 1)
        for q in (50, 99)
    }
    print(
        json.dumps(
            {
                "seconds": seconds,
                "warmup_seconds": warmup_seconds,
                "warmup": warm,
                "timed": receipts - warm,
                "ok": ok,
                "failed": failed,
                "latency_ms": pct,
                "cpu_seconds": cpu,
            }
        )
    )


async def _aiohttp_load(
    target: str, signed: list[tuple[bytes, str]], warm: int, concurrency: int
) -> tuple[float, float, int, int, list[float], float]:
    import aiohttp

    ok = failed = 0
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(indexes: Iterator[int]) -> None:
            nonlocal ok, failed
            for i in indexes:
                body, token = signed[i]
                headers = {"Content-Type": "application/json", "X-Gwapi-Signature": token}
                t0 = time.perf_counter()
                async with session.post(target, data=body, headers=headers) as r:
                    await r.read()
                latencies.append(time.perf_counter() - t0)
                if 200 <= r.status < 300:
                    ok += 1
                else:
                    failed += 1

        start = time.perf_counter()
        indexes = iter(range(warm))
        await asyncio.gather(*(worker(indexes) for _ in range(concurrency)))
        latencies.clear()
        warmup_seconds = time.perf_counter() - start
        cpu0 = time.process_time()
        start = time.perf_counter()
        indexes = iter(range(warm, len(signed)))
        await asyncio.gather(*(worker(indexes) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    return warmup_seconds, seconds, ok, failed, latencies, cpu


def _cpu_or_zero(pid: int) -> float:
    """CPU seconds of a process so far; 0 when it is gone."""
    return cpu_seconds(pid) or 0.0


async def _subprocess_json(*argv: str) -> dict[str, Any]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        out, _ = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} {argv[1]} failed (status {child.returncode})")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


# ------------------------------------------------------------------------------ (b) SMPP


async def smpp_receipts(receipts: int, window: int, timeout: float) -> dict[str, Any]:
    url = await fresh_database("broadcaster_bench_receipts_smpp")
    await seed_box(url, receipts)
    with children() as (started, log_dir):
        port, http_port = procs.free_port(), procs.free_port()
        smsc_pid = _start_smsc(started, log_dir, port, http_port, window)
        sim = f"http://127.0.0.1:{http_port}"
        config = log_dir / "gw.toml"
        config.write_text(
            f'[[gateways]]\nname = "smsc"\ntype = "smpp"\nbase_url = "smpp://127.0.0.1:{port}"\n'
            f'token = "{SMPP_SYSTEM_ID}:{SMPP_PASSWORD}"\nrate_per_second = 10000000\n'
            f'max_batch = 200\nconcurrency = 4\nsender = "POLITI"\n'
        )
        started.append(start_dispatcher(log_dir, url, config))
        dispatcher_pid = started[-1].pid
        conn = await connect(url)
        try:
            t0 = time.time()
            alert_id, _ = await create_alert(
                conn, NewAlert("bench", ZONE, parse_area(ZONE), "normal", None, None), None, None
            )
            deadline = t0 + timeout
            sent = 0
            while time.time() < deadline:
                sent = await _count(conn, alert_id, "sent")
                if sent == receipts:
                    break
                await asyncio.sleep(0.1)
            send_seconds = time.time() - t0
            if sent != receipts:
                raise RuntimeError(f"only {sent} of {receipts} deliveries were sent")
            held = _sim(sim, "GET", "/_sim/stats")["receipts_held"]
            cpu0 = (_cpu_or_zero(dispatcher_pid), _cpu_or_zero(smsc_pid), await backend_cpu(conn))
            start = time.time()
            released = _sim(sim, "POST", "/_sim/release")["released"]
            delivered = 0
            deadline = start + timeout
            while time.time() < deadline:
                delivered = await _count(conn, alert_id, "delivered")
                if delivered == receipts:
                    break
                await asyncio.sleep(0.05)
            seconds = time.time() - start
            cpu1 = (_cpu_or_zero(dispatcher_pid), _cpu_or_zero(smsc_pid), await backend_cpu(conn))
            stats = _sim(sim, "GET", "/_sim/stats")
        finally:
            await conn.close()
    if delivered != receipts:
        raise RuntimeError(f"only {delivered} of {receipts} receipts were committed")
    cpu = {
        "dispatcher": cpu1[0] - cpu0[0],
        "smsc_simulator": cpu1[1] - cpu0[1],
        # the dispatcher's connections (the polling connection of this script is left out)
        "postgres_backends": sum(t - cpu0[2].get(pid, 0.0) for pid, t in cpu1[2].items()),
    }
    cpu["total"] = sum(cpu.values())
    return {
        "receipts": receipts,
        "smsc_window": window,
        "held": held,
        "released": released,
        "delivered_in_db": delivered,
        "deliver_sm_sent": stats["receipts_sent"],  # more than receipts if any were resent
        "deliver_sm_refused": stats["receipts_refused"],
        "seconds": round(seconds, 3),
        "receipts_per_s": round(delivered / seconds, 1),
        "send_seconds": round(send_seconds, 2),
        # CPU while the receipts came in: per receipt, and cores kept busy. On a machine of
        # 2 cores, 20,000 receipts/s needs a total of at most 100 us per receipt.
        "cpu_us_per_receipt": {k: round(1e6 * v / receipts, 1) for k, v in cpu.items()},
        "cpu_cores_busy": {k: round(v / seconds, 2) for k, v in cpu.items()},
    }


async def smpp_ceiling(receipts: int, window: int, timeout: float) -> dict[str, Any]:
    """The same SMSC simulator process and SmppAdapter, in a client process whose on_receipts
    returns at once: receipts/s without the database, the most the dispatcher could reach
    with this simulator (and a floor of what the simulator can emit)."""
    with children() as (started, log_dir):
        port, http_port = procs.free_port(), procs.free_port()
        smsc_pid = _start_smsc(started, log_dir, port, http_port, window)
        out = await _subprocess_json(
            SCRIPT,
            "--smpp-client",
            "--port",
            str(port),
            "--http-port",
            str(http_port),
            "--smsc-pid",
            str(smsc_pid),
            "--smpp-receipts",
            str(receipts),
            "--timeout",
            str(timeout),
        )
    return {"smsc_window": window, **out}


def _start_smsc(
    started: list[procs.Child], log_dir: Path, port: int, http_port: int, window: int
) -> int:
    argv = [SCRIPT, "--serve-smsc", "--port", str(port), "--http-port", str(http_port)]
    argv += ["--smsc-window", str(window)]
    started.append(
        procs.start(
            "smsc", [sys.executable, *argv], env={}, log_dir=log_dir, ready_line="listening on"
        )
    )
    return started[-1].pid


async def _smpp_client(
    port: int, http_port: int, smsc_pid: int, receipts: int, timeout: float
) -> None:
    """Submit `receipts` messages through an SmppAdapter, release the receipts and take them
    with a sink that stores nothing; prints a JSON line with the figures."""
    from gateway_adapters.base import GatewayConfig, OutboundMessage, ReceiptUpdate
    from gateway_adapters.smpp import SmppAdapter

    sim = f"http://127.0.0.1:{http_port}"
    taken = 0
    all_taken = asyncio.Event()

    async def sink(updates: list[ReceiptUpdate]) -> None:
        nonlocal taken
        taken += len(updates)
        if taken >= receipts:
            all_taken.set()

    config = GatewayConfig(
        name="smsc",
        type="smpp",
        base_url=f"smpp://127.0.0.1:{port}",
        token=f"{SMPP_SYSTEM_ID}:{SMPP_PASSWORD}",
        max_batch=1000,
    )
    adapter = SmppAdapter(config, "unused")
    await adapter.start(sink)
    try:
        messages = [OutboundMessage(i, f"+{FIRST_MSISDN + i}", "bench", 1) for i in range(receipts)]
        for i in range(0, receipts, 1000):
            results = await adapter.send_batch(messages[i : i + 1000])
            if not all(r.accepted for r in results):
                raise RuntimeError("the simulator refused a message")
        cpu0 = (time.process_time(), _cpu_or_zero(smsc_pid))
        start = time.perf_counter()
        released = (await asyncio.to_thread(_sim, sim, "POST", "/_sim/release"))["released"]
        await asyncio.wait_for(all_taken.wait(), timeout)
        while (await asyncio.to_thread(_sim, sim, "GET", "/_sim/stats"))["receipts_pending"]:
            await asyncio.sleep(0.01)  # the last answers are on their way to the simulator
        seconds = time.perf_counter() - start
        cpu1 = (time.process_time(), _cpu_or_zero(smsc_pid))
    finally:
        await adapter.close()
    cpu = {"adapter": cpu1[0] - cpu0[0], "smsc_simulator": cpu1[1] - cpu0[1]}
    figures = {
        "receipts": receipts,
        "released": released,
        "taken": taken,
        "seconds": round(seconds, 3),
        "receipts_per_s": round(receipts / seconds, 1),
        "cpu_us_per_receipt": {k: round(1e6 * v / receipts, 1) for k, v in cpu.items()},
    }
    print(json.dumps(figures))


async def _count(conn: Any, alert_id: int, status: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE alert_id = $1 AND status = $2", alert_id, status
        )
    )


def _sim(base: str, method: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}{path}", method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return dict(json.loads(r.read()))


async def _serve_smsc(port: int, http_port: int, window: int) -> None:
    """The SMSC simulator with receipts held and a chosen receipt window (not a CLI option)."""
    from gateway_simulators.smpp import SmscOptions, serve

    options = SmscOptions(
        system_id=SMPP_SYSTEM_ID,
        password=SMPP_PASSWORD,
        hold_receipts=True,
        receipt_window=window,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)

    def ready(smpp: int, http: int | None) -> None:
        print(f"listening on smpp://127.0.0.1:{smpp} http://127.0.0.1:{http}", flush=True)

    await serve(options, "127.0.0.1", port, http_port=http_port, ready=ready, stop=stop)


# ------------------------------------------------------------------------------ main


async def main(args: argparse.Namespace) -> None:
    from ceilings import api_ceiling

    figures: dict[str, Any] = {}
    parts = []
    if args.only in (None, "http"):
        before = await api_ceiling(args.api_requests, args.concurrency, args.client)
        http = await http_receipts(args.receipts, args.concurrency, args.client)
        after = await api_ceiling(args.api_requests, args.concurrency, args.client)
        ceiling = bracketed(before, after, "req_per_s")
        figures["http_gatewayapi"] = http
        figures["api_noop_ceiling"] = ceiling
        figures["http_share_of_ceiling"] = round(http["receipts_per_s"] / ceiling["req_per_s"], 3)
        parts.append(
            f"HTTP (GatewayAPI, 1 API process, {args.concurrency} in flight): "
            f"{http['receipts_per_s']:,.0f} receipts/s committed "
            f"({http['delivered_in_db']:,} of {args.receipts:,} delivered in the DB), "
            f"FastAPI no-op ceiling {ceiling['req_per_s']:,.0f} req/s"
        )
    if args.only in (None, "smpp"):
        smpp = {
            f"window_{w}": await smpp_receipts(args.smpp_receipts, w, args.timeout)
            for w in args.smsc_window
        }
        top = max(args.smsc_window)
        ceiling = await smpp_ceiling(args.smpp_receipts, top, args.timeout)
        figures["smpp"] = smpp
        figures["smpp_no_database_ceiling"] = ceiling
        parts.append(
            "SMPP deliver_sm via the dispatcher: "
            + ", ".join(
                f"{s['receipts_per_s']:,.0f}/s (SMSC window {s['smsc_window']}; CPU us/receipt "
                + ", ".join(f"{k} {v}" for k, v in s["cpu_us_per_receipt"].items())
                + ")"
                for s in smpp.values()
            )
            + f"; without the database (SMSC window {top}) {ceiling['receipts_per_s']:,.0f}/s"
        )
    report("receipts", figures, "; ".join(parts))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=50_000, help="HTTP receipts")
    parser.add_argument("--concurrency", type=int, default=64, help="HTTP requests in flight")
    parser.add_argument(
        "--client",
        choices=["lean", "aiohttp"],
        default="lean",
        help="load generator for the receipts and the ceiling (bench/loadgen.py or aiohttp)",
    )
    parser.add_argument("--api-requests", type=int, default=20_000, help="no-op ceiling POSTs")
    parser.add_argument("--smpp-receipts", type=int, default=50_000)
    parser.add_argument(
        "--smsc-window",
        type=int,
        nargs="+",
        default=[SMSC_WINDOW],
        help="deliver_sm the SMSC keeps unanswered at most (one run each; default %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds")
    parser.add_argument("--only", choices=["http", "smpp"], help="run one part only")
    # Internal modes: the child processes this script starts.
    parser.add_argument("--load-generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-smsc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smpp-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smsc-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_generator:
        import uvloop

        uvloop.run(_load_generator(args.target, args.receipts, args.concurrency, args.client))
    elif args.serve_smsc:
        import uvloop

        uvloop.run(_serve_smsc(args.port, args.http_port, args.smsc_window[0]))
    elif args.smpp_client:
        import uvloop

        uvloop.run(
            _smpp_client(args.port, args.http_port, args.smsc_pid, args.smpp_receipts, args.timeout)
        )
    else:
        run(main(args))
