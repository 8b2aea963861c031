"""The `broadcaster` command. Errors end in one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from broadcaster.database import DatabaseUnavailable, connect, resolve_url
from broadcaster.migrate import NotMigrated, apply_migrations, ensure_migrated
from broadcaster.ops import logs
from broadcaster.settings import ConfigError, Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broadcaster", description="SMS broadcast service for police alerts"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("migrate", help="apply database migrations")
    for name, text in (
        ("serve", "run the API and a dispatcher in one process"),
        ("api", "run the HTTP API only"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", help="listen address (BROADCASTER_HOST)")
        p.add_argument("--port", type=int, help="listen port (BROADCASTER_PORT)")
    sub.add_parser("dispatcher", help="run a dispatcher only")
    sub.add_parser(
        "healthcheck", help="exit 0 if this container's API or dispatcher answers /healthz"
    )
    key = sub.add_parser("create-api-key", help="create an API key and print it once")
    key.add_argument("--name", required=True)
    key.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        help="a scope to grant (repeatable; default: all)",
    )
    keys = sub.add_parser("api-key", help="list or revoke API keys").add_subparsers(
        dest="key_command", required=True
    )
    keys.add_parser("list", help="list API keys (never the keys themselves)")
    revoke = keys.add_parser("revoke", help="revoke an API key, effective at once")
    revoke.add_argument("key", help="the key's id, or its name if only one active key has it")
    sub.add_parser(
        "simulate-gateway", help="run the gateway simulator (see --help)", add_help=False
    )
    imp = sub.add_parser(
        "import-subscribers",
        help="import subscribers and their locations from a CSV file",
        description="Import a CSV file (header: phone and lat,lon or postal_code, optional "
        "label, language, status; one row per place) in one transaction. An existing "
        "subscriber's status changes only where the file states one, and an opted-out one "
        "stays opted out; numbers erased at their owner's request are never imported.",
    )
    imp.add_argument("file", type=Path, metavar="FILE")
    imp.add_argument(
        "--report",
        type=Path,
        metavar="CSV",
        help="where to list the rows not imported as written (line, column, value, reason); "
        "default FILE.errors.csv, written only when there are such rows",
    )
    imp.add_argument(
        "--skip-invalid",
        action="store_true",
        help="import the valid rows and report the invalid ones (default: import nothing "
        "when a row is invalid)",
    )
    zones = sub.add_parser(
        "import-zones",
        help="create or update named zones from a GeoJSON file",
        description="Import a GeoJSON Feature or FeatureCollection of Polygon or MultiPolygon "
        "features with the properties name, kind (police_district, municipality, postal_code, "
        "custom) and code (where the zone has one; postal codes must) in one transaction. A "
        "feature with a code updates the zone of that kind and code, one without the zone of "
        "that kind and name; the others are created.",
    )
    zones.add_argument("file", type=Path, metavar="FILE")
    status = sub.add_parser(
        "status",
        help="live view of active alerts, gateways and the queue (--once: one snapshot)",
    )
    status.add_argument("--once", action="store_true", help="print one snapshot and exit")
    status.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    report = sub.add_parser(
        "report",
        help="write a self-contained HTML evaluation of the programme over a period",
        description="Write one HTML file (charts as inline SVG, nothing loaded from elsewhere, "
        "no script) with the period's headline numbers, alerts per week, recipients, delivery "
        "ratio and tips per alert, time to deliver, active subscribers over time and per zone "
        "and sign-up reasons. Aggregates only: no phone number, no message text. Dates are "
        "Copenhagen time; a date given to --until includes that day.",
    )
    report.add_argument(
        "--since", required=True, metavar="DATE", help="start: YYYY-MM-DD or an ISO 8601 time"
    )
    report.add_argument(
        "--until", metavar="DATE", help="end (excluded; a date includes that day); default now"
    )
    report.add_argument(
        "--out",
        type=Path,
        default=Path("report.html"),
        metavar="FILE",
        help="where to write the report (default report.html)",
    )
    demo = sub.add_parser("demo", help="broadcast to a North Zealand zone end to end")
    demo.add_argument("--subscribers", type=int, default=34_000)
    demo.add_argument("--rate", type=float, default=5_000, help="gateway messages per second")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate-gateway"]:
        from gateway_simulators import gatewayapi as simulator

        return simulator.main(argv[1:])
    args = _parser().parse_args(argv)
    _exit_on_sigterm()
    try:
        settings = load_settings()
        # The demo is read by people, whatever its output is connected to.
        human = args.command == "demo" and settings.log_format == "auto"
        logs.setup(settings.log_level, "text" if human else settings.log_format)
        return _dispatch(args, settings)
    except (ConfigError, DatabaseUnavailable, NotMigrated, ValueError) as exc:
        print(f"broadcaster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "demo":
        from broadcaster.demo import run_demo

        return run_demo(settings, subscribers=args.subscribers, rate=args.rate)
    if args.command == "healthcheck":
        from broadcaster.ops.healthcheck import probe

        return probe(settings)
    if args.command == "report":
        from broadcaster.ops import report

        # Bad options fail before a database is looked for.
        since, until = report.period(args.since, args.until)
        report.check_output(args.out)
        url = resolve_url(settings.database_url, settings.data_dir)
        return _run(report.run(url, since, until, args.out))
    url = resolve_url(settings.database_url, settings.data_dir)
    if args.command == "migrate":
        return _run(_migrate(url))
    if args.command == "create-api-key":
        return _run(_create_key(url, args.name, args.scopes))
    if args.command == "api-key":
        return _run(_manage_keys(url, args.key_command, getattr(args, "key", None)))
    if args.command in ("serve", "api"):
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        settings = settings.model_copy(update=overrides)
        _run(_check_migrated(url))
        return _serve(settings, url, run_dispatcher=args.command == "serve")
    if args.command == "dispatcher":
        return _run(_dispatcher(settings, url))
    if args.command == "import-subscribers":
        from broadcaster.import_command import import_command

        return _run(
            import_command(url, args.file, skip_invalid=args.skip_invalid, report=args.report)
        )
    if args.command == "status":
        from broadcaster.ops.status import run as run_status

        return _run(run_status(url, once=args.once, interval=max(0.2, args.interval)))
    if args.command == "import-zones":
        from broadcaster.ingest.zone_files import import_command as import_zones

        return _run(import_zones(url, args.file))
    raise AssertionError(args.command)


def _run(coro: Awaitable[int | None]) -> int:
    async def wrapper() -> int | None:
        return await coro

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(wrapper()) or 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where available: the dispatcher and the API spend their CPU in the event loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _migrate(url: str) -> int:
    conn = await connect(url)
    try:
        applied = await apply_migrations(conn)
    finally:
        await conn.close()
    sql = [name for name in applied if name.endswith(".sql")]
    print(
        f"applied {len(sql)} migration(s)"
        + (f": {', '.join(sql)}" if sql else "; the database is up to date")
    )
    for loaded in applied:
        if loaded not in sql:
            print(f"loaded {loaded}")
    return 0


async def _check_migrated(url: str) -> int:
    conn = await connect(url)
    try:
        await ensure_migrated(conn)
    finally:
        await conn.close()
    return 0


async def _manage_keys(url: str, command: str, which: str | None) -> int:
    from broadcaster.auth import list_api_keys, revoke_api_key

    conn = await connect(url)
    try:
        await ensure_migrated(conn)
        if command == "revoke":
            assert which is not None
            print(f"revoked API key {await revoke_api_key(conn, which)}")
            return 0
        rows = await list_api_keys(conn)
    finally:
        await conn.close()
    print(f"{'id':>4}  {'name':<24} {'created':<20} {'revoked':<20} scopes")
    for r in rows:
        revoked = f"{r['revoked_at']:%Y-%m-%d %H:%M:%S}" if r["revoked_at"] else "-"
        print(
            f"{r['id']:>4}  {r['name'][:24]:<24} {r['created_at']:%Y-%m-%d %H:%M:%S}  "
            f"{revoked:<20} {','.join(r['scopes'])}"
        )
    return 0


async def _create_key(url: str, name: str, scopes: list[str] | None) -> int:
    from broadcaster.auth import create_api_key

    conn = await connect(url)
    try:
        await ensure_migrated(conn)
        key = await create_api_key(conn, name, scopes)
    finally:
        await conn.close()
    print(key)
    return 0


def _serve(settings: Settings, url: str, *, run_dispatcher: bool) -> int:
    import uvicorn

    from broadcaster.api.app import create_app

    app = create_app(settings, url, run_dispatcher=run_dispatcher)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    uvicorn.Server(config).run()
    return 0


async def _dispatcher(settings: Settings, url: str) -> int:
    from broadcaster.dispatch.dispatcher import Dispatcher, worker_name
    from broadcaster.dispatch.pool import dispatcher_pool
    from gateway_adapters.registry import create_adapter

    worker = worker_name()
    pool = await dispatcher_pool(settings, url, worker)
    try:
        from broadcaster.ops import metrics

        metrics.POOLS.watch("dispatcher", pool)
        async with pool.acquire() as conn:
            await ensure_migrated(conn)
        adapters = [
            create_adapter(g, settings.callback_url(g.name)) for g in settings.gateway_configs()
        ]
        if settings.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(settings.metrics_port, addr=settings.host)
        stop = asyncio.Event()
        _on_signals(stop.set)
        try:
            await Dispatcher(settings, pool, adapters, url, worker).run(stop)
        finally:
            for adapter in adapters:
                await adapter.close()
    finally:
        await pool.close()
    return 0


def _exit_on_sigterm() -> None:
    """SIGTERM ends the process the way SIGINT does: through Python's exit path, so that
    `finally` blocks and exit handlers run, the embedded PostgreSQL's among them (it stops the
    server when this is the last process using it). By default SIGTERM kills the process on the
    spot: uvicorn, once it has shut down gracefully on SIGTERM, raises the signal again, and the
    API exited without stopping the server. The dispatcher and uvicorn install handlers of their
    own while they run; this one covers before and after."""

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def _on_signals(callback: Callable[[], Any]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


if __name__ == "__main__":
    raise SystemExit(main())
