"""Run every benchmark in bench/ one after another and collect their results.

Every `bench/*.py` with a main guard except harness.py and this file runs with its defaults
(or small sizes with --quick), never two at once. Their JSON lines go to bench/results.json
(overwritten, written again after each script so a partial run keeps what it measured) and their
human-readable lines are printed. A script that fails is recorded with its exit status and the
run goes on; the exit status is 1 when any failed.

    python bench/run_all.py [--quick] [--only NAME ...] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results.json"
SKIP = {"harness", "run_all"}
FIRST = [
    "rate_limit",
    "emergency_latency",
    "ceilings",
    "fanout",
    "preview",
    "dispatch",
    "district",
    "broadcast",
    # 2 APIs and 3 dispatchers (+1, one SIGKILLed) over one database, a 500,000 broadcast with
    # the API under load: nobody missed, doubles within the bound (its own row in benchmarks.md).
    "scale_out",
]
# Small sizes for scripts that have no --quick of their own. (broadcast.py and district.py have
# one: 10,000 recipients with receipts flowing, and 5,000 subscribers at 1,000 msg/s.)
QUICK = {
    "rate_limit": ["--rate", "200", "--seconds", "5", "--recipients", "2000"],
    "emergency_latency": ["--subscribers", "20000", "--samples", "5"],
    "receipts": ["--receipts", "3000", "--api-requests", "2000", "--smpp-receipts", "2000"],
    "import_subscribers": ["--rows", "20000"],
    "inbound": [
        "--subscribers",
        "20000",
        "--stops",
        "10",
        "--started",
        "2000",
        "--tips",
        "3000",
        "--api-requests",
        "2000",
    ],
    "memory": ["--recipients", "10000", "50000"],
    "cap_ingest": ["--subscribers", "20000", "--samples", "50"],
}
MAIN_GUARD = re.compile(r"^if __name__ == [\"']__main__[\"']:", re.MULTILINE)


def scripts() -> list[Path]:
    found = {
        p.stem: p
        for p in BENCH.glob("*.py")
        if p.stem not in SKIP and MAIN_GUARD.search(p.read_text(encoding="utf-8"))
    }
    return [found[n] for n in FIRST if n in found] + [
        found[n] for n in sorted(found) if n not in FIRST
    ]


def quick_args(script: Path) -> list[str] | None:
    """Small-size arguments, or None when the script has no known small size."""
    if '"--quick"' in script.read_text(encoding="utf-8"):
        return ["--quick"]
    return QUICK.get(script.stem)


def run_script(argv: list[str], timeout: float) -> tuple[int, list[dict[str, Any]], float]:
    """Run one script; echo its non-JSON output lines, return (status, JSON lines, seconds)."""
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=BENCH.parent) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                record = _json(line)
                if record is not None:
                    results.append(record)
                elif line:
                    print(f"  {line}", flush=True)
                if time.monotonic() - started > timeout:
                    raise subprocess.TimeoutExpired(argv, timeout)
            status = proc.wait(max(1.0, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            proc.terminate()  # the script stops its own children on SIGTERM
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            status = 124
    return status, results, time.monotonic() - started


def _json(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "bench" in record else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only these")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per script")
    args = parser.parse_args()
    selected = [s for s in scripts() if not args.only or s.stem in args.only]
    collected: list[dict[str, Any]] = []
    failed = []
    for script in selected:
        extra: list[str] = []
        if args.quick:
            small = quick_args(script)
            if small is None:
                print(f"# {script.stem}: no small size known, running with its defaults")
            extra = small or []
        print(f"# {script.stem} {' '.join(extra)}".rstrip(), flush=True)
        status, results, seconds = run_script([sys.executable, str(script), *extra], args.timeout)
        collected += results
        if status != 0:
            failed.append(script.stem)
            collected.append(
                {"bench": script.stem, "error": f"exit status {status}", "args": extra}
            )
            print(f"{script.stem}: FAILED (exit status {status})", flush=True)
        print(f"# {script.stem} took {seconds:.0f} s", flush=True)
        RESULTS.write_text(json.dumps(collected, indent=1) + "\n", encoding="utf-8")
    print(f"# {len(collected)} result(s) in {RESULTS.relative_to(BENCH.parent)}", flush=True)
    if failed:
        print(f"# failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
