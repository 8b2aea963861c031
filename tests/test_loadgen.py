"""bench/loadgen.py, the load generator the receipt figures rest on: every request reaches the
server once with its own body, answers are counted by status, and a broken exchange fails the
run instead of hanging or counting wrong."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from loadgen import LoadError, LoadGenerator, encode_post

from broadcaster.procs import free_port


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Counter[bytes], list[str]]]:
    """An HTTP server on a free port: answers 200 with a body, 503 for bodies starting with
    'fail', a chunked answer (no Content-Length) for 'chunked', and closes for 'close'."""
    seen: Counter[bytes] = Counter()
    signatures: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen[body] += 1
        signatures.append(request.headers.get("X-Sig", ""))
        if body.startswith(b"fail"):
            return web.json_response({"error": "no"}, status=503)
        if body.startswith(b"chunked"):
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"x" * 10)
            await response.write_eof()
            return response
        if body.startswith(b"close"):
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=200)
        # A body big enough to arrive in more than one read.
        return web.Response(body=b"{" + b" " * 70_000 + b"}", content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/callbacks/primary", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/v1/callbacks/primary", seen, signatures
    finally:
        await runner.cleanup()


async def test_every_request_once_and_counted(
    server: tuple[str, Counter[bytes], list[str]],
) -> None:
    target, seen, signatures = server
    bodies = [f'{{"n":{i}}}'.encode() for i in range(500)] + [b"fail-1", b"fail-2"]
    requests = [encode_post(target, b, [("X-Sig", f"s{i}")]) for i, b in enumerate(bodies)]
    async with LoadGenerator(target, 8) as generator:
        seconds, ok, failed, latencies = await generator.run(requests)
        # The connections stay open for a second run (warm-up, then the timed part).
        _, ok2, failed2, _ = await generator.run(requests[:10])
    assert (ok, failed) == (500, 2)
    assert (ok2, failed2) == (10, 0)
    assert len(latencies) == 502 and seconds > 0
    assert all(seen[b] == 1 for b in bodies[10:]) and all(seen[b] == 2 for b in bodies[:10])
    assert sorted(signatures[:502]) == sorted(f"s{i}" for i in range(502))


async def test_fewer_requests_than_connections(
    server: tuple[str, Counter[bytes], list[str]],
) -> None:
    target, seen, _ = server
    async with LoadGenerator(target, 16) as generator:
        _, ok, failed, _ = await generator.run([encode_post(target, b"one")])
        assert (ok, failed) == (1, 0)
        assert await generator.run([]) == (pytest.approx(0, abs=1), 0, 0, [])
    assert seen[b"one"] == 1


@pytest.mark.parametrize("body", [b"chunked", b"close"])
async def test_broken_exchange_fails_the_run(
    server: tuple[str, Counter[bytes], list[str]], body: bytes
) -> None:
    target, _, _ = server
    async with LoadGenerator(target, 2) as generator:
        with pytest.raises(LoadError):
            await asyncio.wait_for(generator.run([encode_post(target, body)] * 4), 10)


def test_only_plain_http_targets() -> None:
    with pytest.raises(ValueError, match="http://"):
        LoadGenerator("https://example.org/x", 1)
