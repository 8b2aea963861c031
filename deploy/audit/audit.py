"""Dependency audit: the packages installed in a virtual environment, pinned as they are
(`pip freeze`, the project itself left out), checked by pip-audit against PyPI's advisory data,
with the known and accepted ones in allow.toml.

    python deploy/audit/audit.py [--venv .venv] [--pip-audit PATH] [--require]

Exit status: 0 when no advisory outside the allow-list applies; 1 when one does, or when an
allow-list entry is past its review date; 2 with --require when some packages could not be
audited (the advisory service does not know their versions, or cannot be reached). Without
--require, packages that could not be audited are listed and counted, and the run says plainly
when it checked nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Allowed:
    id: str
    package: str
    reason: str
    review_by: dt.date


@dataclass(frozen=True)
class Verdict:
    findings: list[str]  # advisories that fail the audit
    allowed: list[str]  # advisories the allow-list lets pass
    stale: list[str]  # allow-list entries past their review date
    unaudited: list[str]  # packages pip-audit could not check
    audited: int

    def status(self, require: bool) -> int:
        if self.findings or self.stale:
            return 1
        if require and self.unaudited:
            return 2
        return 0


def load_allow_list(path: Path) -> list[Allowed]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    entries = []
    for n, item in enumerate(data.get("allow", []), 1):
        missing = {"id", "package", "reason", "review_by"} - item.keys()
        if missing:
            raise ValueError(f"{path.name}: entry {n} lacks {', '.join(sorted(missing))}")
        review_by = item["review_by"]
        if not isinstance(review_by, dt.date):
            raise ValueError(f"{path.name}: entry {n}: review_by must be a date (2027-03-01)")
        entries.append(Allowed(item["id"], item["package"].lower(), item["reason"], review_by))
    return entries


def judge(report: dict[str, Any], allow: list[Allowed], today: dt.date) -> Verdict:
    """What a pip-audit JSON report (`-f json`) means under the allow-list on `today`."""
    findings: list[str] = []
    allowed: list[str] = []
    unaudited: list[str] = []
    audited = 0
    for dep in report.get("dependencies", []):
        name = str(dep.get("name", "?"))
        if "skip_reason" in dep:
            unaudited.append(f"{name}: {dep['skip_reason']}")
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            ids = {vuln.get("id", ""), *vuln.get("aliases", [])}
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
            line = f"{name} {dep.get('version', '?')}: {vuln.get('id')} (fixed in {fixes})"
            match = next((a for a in allow if a.package == name.lower() and a.id in ids), None)
            if match is None:
                findings.append(line)
            else:
                allowed.append(f"{line}; allowed until {match.review_by}: {match.reason}")
    stale = [
        f"{a.package} {a.id}: review_by {a.review_by} has passed"
        for a in allow
        if a.review_by < today
    ]
    return Verdict(findings, allowed, stale, unaudited, audited)


def frozen_requirements(venv: Path) -> str:
    """The venv's packages at their installed versions, without editable installs (the project)."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "".join(line + "\n" for line in out.splitlines() if line and not line.startswith("-e"))


def run_pip_audit(pip_audit: str, requirements: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write(requirements)
        f.flush()
        proc = subprocess.run(
            [
                pip_audit,
                "-r",
                f.name,
                "--no-deps",
                "--disable-pip",
                "-f",
                "json",
                "--progress-spinner",
                "off",
            ],
            capture_output=True,
            text=True,
        )
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"audit: pip-audit gave no report ({last})") from None
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path(".venv"))
    parser.add_argument("--pip-audit", default="pip-audit")
    parser.add_argument("--allow-list", type=Path, default=HERE / "allow.toml")
    parser.add_argument(
        "--require",
        action="store_true",
        help="fail (status 2) when any package could not be audited",
    )
    args = parser.parse_args()
    try:
        allow = load_allow_list(args.allow_list)
    except ValueError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 1
    requirements = frozen_requirements(args.venv)
    verdict = judge(run_pip_audit(args.pip_audit, requirements), allow, dt.date.today())
    for line in verdict.findings:
        print(f"VULNERABLE {line}")
    for line in verdict.stale:
        print(f"ALLOW-LIST {line}")
    for line in verdict.allowed:
        print(f"allowed    {line}")
    total = verdict.audited + len(verdict.unaudited)
    print(
        f"audit: {total} packages, {verdict.audited} audited, {len(verdict.unaudited)} could not"
        f" be, {len(verdict.findings)} vulnerable, {len(verdict.allowed)} allowed"
    )
    if verdict.unaudited and not verdict.audited:
        print(
            "audit: checked NOTHING: the advisory service knows none of these versions, "
            f"e.g. {verdict.unaudited[0]}"
        )
    elif verdict.unaudited:
        for line in verdict.unaudited:
            print(f"not audited {line}")
    return verdict.status(args.require)


if __name__ == "__main__":
    sys.exit(main())
