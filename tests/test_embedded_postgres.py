"""The embedded PostgreSQL (no DATABASE_URL) stops when the last process using it exits, on
SIGTERM or SIGINT as on a normal exit, and not before: `broadcaster api` and `broadcaster
dispatcher` started on one BROADCASTER_DATA_DIR share one server (issue 20: it outlived the API).

Each test starts the processes on a data directory of its module, reads the server's PID from
postmaster.pid, signals the processes and watches the server. Whatever a failing test leaves
running is stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from tests.pgserver import stop_cluster

from broadcaster import procs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory whose embedded cluster is initialised and migrated (by `broadcaster
    migrate`, which leaves the server stopped as it exits)."""
    path = tmp_path_factory.mktemp("embedded")
    result = subprocess.run(
        procs.broadcaster_argv("migrate"),
        env=environment(path),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    try:
        yield path
    finally:
        if postmaster(path) is not None:
            with contextlib.suppress(RuntimeError):
                stop_cluster(path / "pg")


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    # An empty DATABASE_URL counts as none: the embedded server under BROADCASTER_DATA_DIR.
    return {
        **os.environ,
        "DATABASE_URL": "",
        "BROADCASTER_DATA_DIR": str(data_dir),
        "BROADCASTER_LOG_LEVEL": "info",
        **extra,
    }


def postmaster(data_dir: Path) -> int | None:
    """The running server's PID, from the postmaster.pid file it removes as it stops."""
    try:
        return int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_api(data_dir: Path, log_dir: Path, name: str = "api") -> procs.Child:
    port = procs.free_port()
    env = environment(data_dir, BROADCASTER_PORT=str(port))
    return procs.start(
        name,
        procs.broadcaster_argv("api"),
        env=env,
        log_dir=log_dir,
        ready_url=f"http://127.0.0.1:{port}/readyz",
        timeout=60,
    )


def start_dispatcher(data_dir: Path, log_dir: Path) -> procs.Child:
    config = log_dir / "gateways.toml"
    config.write_text(  # nothing is sent: a gateway that nobody will call
        '[[gateways]]\nname = "primary"\ntype = "gatewayapi"\n'
        f'base_url = "http://127.0.0.1:{procs.free_port()}"\ntoken = "t"\n'
    )
    return procs.start(
        "dispatcher",
        procs.broadcaster_argv("dispatcher"),
        env=environment(data_dir, BROADCASTER_CONFIG=str(config)),
        log_dir=log_dir,
        ready_line="dispatcher started",
        timeout=60,
    )


def signal_and_wait(child: procs.Child, sig: signal.Signals) -> int:
    os.kill(child.pid, sig)
    return child.process.wait(30)


def assert_stopped(data_dir: Path, pid: int, child: procs.Child) -> None:
    """The server is gone once the process has exited: it stops it on its way out."""
    assert not running(pid), f"the embedded PostgreSQL ({pid}) outlived it:\n{child.log_tail()}"
    assert postmaster(data_dir) is None


@pytest.fixture
def children(data_dir: Path) -> Iterator[list[procs.Child]]:
    """The processes a test starts, stopped after it; and a server a failed test left running,
    so that the next starts from a stopped one."""
    started: list[procs.Child] = []
    try:
        yield started
    finally:
        for child in started:
            child.stop()
        if postmaster(data_dir) is not None:
            with contextlib.suppress(RuntimeError):
                stop_cluster(data_dir / "pg")
            (data_dir / "pg" / ".handle_pids.json").unlink(missing_ok=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_last_process_stops_the_server_on_a_signal(
    sig: signal.Signals, data_dir: Path, tmp_path: Path, children: list[procs.Child]
) -> None:
    assert postmaster(data_dir) is None
    api = start_api(data_dir, tmp_path)
    children.append(api)
    pid = postmaster(data_dir)
    assert pid is not None and running(pid)
    assert signal_and_wait(api, sig) != -sig  # it exited; the signal did not just kill it
    assert_stopped(data_dir, pid, api)


def test_the_server_stays_up_until_the_second_process_exits(
    data_dir: Path, tmp_path: Path, children: list[procs.Child]
) -> None:
    api = start_api(data_dir, tmp_path)
    children.append(api)
    dispatcher = start_dispatcher(data_dir, tmp_path)
    children.append(dispatcher)
    pid = postmaster(data_dir)
    assert pid is not None
    signal_and_wait(api, signal.SIGTERM)
    time.sleep(0.5)
    assert running(pid) and postmaster(data_dir) == pid  # the dispatcher still uses it
    assert dispatcher.process.poll() is None
    assert signal_and_wait(dispatcher, signal.SIGTERM) == 0
    assert_stopped(data_dir, pid, dispatcher)


def test_a_process_killed_on_the_way_does_not_keep_the_server_up(
    data_dir: Path, tmp_path: Path, children: list[procs.Child]
) -> None:
    """A process killed with SIGKILL cannot say it is gone; the last one alive stops the server
    all the same."""
    dispatcher = start_dispatcher(data_dir, tmp_path)
    children.append(dispatcher)
    api = start_api(data_dir, tmp_path)
    children.append(api)
    pid = postmaster(data_dir)
    assert pid is not None
    dispatcher.kill()
    assert running(pid)
    signal_and_wait(api, signal.SIGTERM)
    assert_stopped(data_dir, pid, api)
