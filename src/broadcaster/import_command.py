"""`broadcaster import-subscribers FILE`: the import (importer.py) with a progress bar on a
terminal, a report file of the rows not imported as written, and a summary line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from broadcaster.database import connect
from broadcaster.importer import ImportFailed, import_file
from broadcaster.migrate import ensure_migrated


async def import_command(
    url: str, path: Path, *, skip_invalid: bool = False, report: Path | None = None
) -> int:
    """`broadcaster import-subscribers`: import with a progress bar (on a terminal), print what
    was skipped or kept and a summary line; rows not imported as written go to the report file
    (FILE.errors.csv beside the file unless told otherwise)."""
    report = report or path.with_name(path.name + ".errors.csv")
    conn = await connect(url)
    try:
        await ensure_migrated(conn)
        with _progress(path) as advance:
            try:
                result = await import_file(
                    conn, path, skip_invalid=skip_invalid, report=report, on_progress=advance
                )
            except ImportFailed as exc:
                if report.exists():
                    raise ImportFailed(f"{exc}; every problem is listed in {report}") from None
                raise
    finally:
        await conn.close()
    if result.skipped:
        print(result.skipped_line())
    if result.erased or result.opt_outs_kept:
        print(
            f"not re-subscribed: {result.erased} row(s) of erased numbers, "
            f"{result.opt_outs_kept} row(s) asking to re-subscribe an opted-out number"
        )
    if result.report is not None:
        print(f"rows not imported as written: {result.report}")
    print(f"imported {path.name}: {result.summary()}")
    return 0


@contextlib.contextmanager
def _progress(path: Path) -> Iterator[Callable[[int], None]]:
    """A progress bar of the characters read (on a terminal only: nothing in logs or pipes)."""
    try:
        total = path.stat().st_size
    except OSError:
        total = 0
    with Progress(
        TextColumn("importing {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
        transient=True,
    ) as progress:
        task = progress.add_task(path.name, total=total or None)
        yield lambda read: progress.advance(task, read)
