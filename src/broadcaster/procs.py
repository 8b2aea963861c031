"""Child processes (the service, the gateway simulator) started and stopped by PID.

Used by the demo, the tests and the benchmarks, so that whatever they start on 127.0.0.1 binds a
free port and is stopped again.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, SIGKILL if it does not exit; returns the exit status."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.process.wait(5)
        return self.process.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(5)


def broadcaster_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "broadcaster", *args]


def start(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_dir: Path,
    ready_url: str | None = None,
    ready_line: str | None = None,
    timeout: float = 30.0,
) -> Child:
    """Start a child with its output in log_dir/name.log; wait until ready_url answers 200 or a
    line matching ready_line appears in its output."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
    child = Child(name, process, log_path)
    deadline = time.monotonic() + timeout
    pattern = re.compile(ready_line) if ready_line else None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with status {process.returncode}:\n{child.log_tail()}"
            )
        if ready_url and _answers(ready_url):
            return child
        if pattern and pattern.search(log_path.read_text(errors="replace")):
            return child
        time.sleep(0.05)
    child.stop()
    raise RuntimeError(f"{name} did not become ready within {timeout:.0f} s:\n{child.log_tail()}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
