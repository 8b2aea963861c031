"""The production image, run: `broadcaster migrate`, `create-api-key`, `api` and `healthcheck`
from the image's own filesystem as its non-root user, against the suite's PostgreSQL; an alert
is accepted through the API it serves.

The image is built by deploy/container/build.sh (podman, a debootstrapped base); .ci/run builds
it when podman works on the machine and names it in BROADCASTER_CONTAINER_IMAGE. `podman run`
itself cannot start a container in these machines' sandboxes (the OCI runtime's setrlimit is
refused), so the image's root filesystem is mounted (`podman image mount`) and its entrypoint
run under chroot with the image's user: the same files, interpreter, entrypoint and user, not
the same namespaces."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from tests.conftest import with_database

from broadcaster import procs
from broadcaster.database import connect

IMAGE = os.environ.get("BROADCASTER_CONTAINER_IMAGE")
USER = "10001:10001"  # the Dockerfile's USER
ENV = {"PATH": "/opt/venv/bin:/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONUNBUFFERED": "1"}

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(
        not IMAGE, reason="BROADCASTER_CONTAINER_IMAGE unset (.ci/run sets it when podman builds)"
    ),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def rootfs() -> Iterator[str]:
    assert IMAGE
    mounted = subprocess.run(
        ["podman", "image", "mount", IMAGE], capture_output=True, text=True, check=True
    ).stdout.strip()
    yield mounted
    subprocess.run(["podman", "image", "unmount", IMAGE], capture_output=True, check=False)


def in_image(rootfs: str, *args: str, **env: str) -> list[str]:
    """argv running `broadcaster ARGS` from the image as its user, with only ENV and env set."""
    pairs = [f"{k}={v}" for k, v in {**ENV, **env}.items()]
    return [
        "chroot",
        f"--userspec={USER}",
        rootfs,
        "/usr/bin/env",
        "-i",
        *pairs,
        "broadcaster",
        *args,
    ]


@pytest.fixture
async def empty_db(server_url: str) -> AsyncIterator[str]:
    assert urlsplit(server_url).hostname, (
        "the image, under chroot, reaches PostgreSQL over TCP only: set DATABASE_URL to a server "
        "on 127.0.0.1 (.ci/run does)"
    )
    name = f"broadcaster_image_{os.getpid()}"
    admin = await connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_the_image_migrates_serves_and_checks_its_health(
    rootfs: str, empty_db: str, tmp_path: Path
) -> None:
    async def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        argv = in_image(rootfs, *args, DATABASE_URL=empty_db, **env)
        return await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=120
        )

    inspect = await asyncio.to_thread(
        subprocess.run,
        ["podman", "image", "inspect", str(IMAGE)],
        capture_output=True,
        text=True,
        check=True,
    )
    (image,) = json.loads(inspect.stdout)
    config = image["Config"]
    assert config["User"] == USER
    assert config["Entrypoint"] == ["broadcaster"] and config["Cmd"] == ["api"]
    assert image["Healthcheck"]["Test"] == ["CMD", "broadcaster", "healthcheck"]
    # The image's files are not writable by its user (read-only root filesystem in k8s too).
    write = await asyncio.to_thread(
        subprocess.run,
        ["chroot", f"--userspec={USER}", rootfs, "/usr/bin/touch", "/opt/venv/x"],
        capture_output=True,
    )
    assert write.returncode != 0
    migrated = await run("migrate")
    assert migrated.returncode == 0 and "applied" in migrated.stdout, migrated.stderr
    key = (await run("create-api-key", "--name", "image", "--scope", "alerts:write")).stdout.strip()
    assert len(key) > 40
    port = procs.free_port()
    api = procs.start(
        "image-api",
        in_image(rootfs, "api", DATABASE_URL=empty_db, BROADCASTER_PORT=str(port)),
        env={},
        log_dir=tmp_path,
        ready_url=f"http://127.0.0.1:{port}/readyz",
        timeout=60,
    )
    try:
        health = await run("healthcheck", BROADCASTER_PORT=str(port))
        assert health.returncode == 0, health.stderr
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            r = await http.post(
                "/v1/alerts",
                headers={"Authorization": f"Bearer {key}"},
                json={"message": "Test", "area": {"postal_codes": ["3400"]}},
            )
            assert r.status_code == 202, r.text
    finally:
        # A graceful stop: uvicorn shuts down, then the signal ends the process (128 + 15).
        assert api.stop() == 143
        assert "Application shutdown complete" in api.log_path.read_text()
    await asyncio.sleep(0.2)
    down = await run("healthcheck", BROADCASTER_PORT=str(port))
    assert down.returncode == 1 and "unhealthy" in down.stderr
