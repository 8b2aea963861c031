"""The dependency audit's verdict (deploy/audit/audit.py): what fails CI, what the allow-list
lets pass and until when, and a run that could check nothing saying so. The reports are in
pip-audit's JSON format (`pip-audit -f json`); the script's end-to-end run against PyPI's
advisory data needs that service (docs/reliability.md)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

PATH = Path(__file__).resolve().parents[1] / "deploy" / "audit" / "audit.py"
spec = importlib.util.spec_from_file_location("dependency_audit", PATH)
assert spec and spec.loader
audit = importlib.util.module_from_spec(spec)
sys.modules["dependency_audit"] = audit
spec.loader.exec_module(audit)

TODAY = dt.date(2026, 12, 7)

REPORT: dict[str, Any] = {
    "dependencies": [
        {"name": "fastapi", "version": "0.100.0", "vulns": []},
        {
            "name": "Jinja2",
            "version": "3.1.2",
            "vulns": [
                {
                    "id": "PYSEC-2024-1",
                    "fix_versions": ["3.1.3"],
                    "aliases": ["CVE-2024-22195", "GHSA-h5c8-rqwp-cp95"],
                    "description": "xmlattr filter",
                }
            ],
        },
        {"name": "uvloop", "skip_reason": "Dependency not found on PyPI and could not be audited"},
    ],
    "fixes": [],
}


def allowed(**kw: Any) -> Any:
    base = {
        "id": "GHSA-h5c8-rqwp-cp95",
        "package": "jinja2",
        "reason": "r",
        "review_by": dt.date(2027, 1, 1),
    }
    return audit.Allowed(**(base | kw))


def test_a_vulnerability_fails_the_audit_and_names_its_fix() -> None:
    verdict = audit.judge(REPORT, [], TODAY)
    assert verdict.findings == ["Jinja2 3.1.2: PYSEC-2024-1 (fixed in 3.1.3)"]
    assert verdict.audited == 2 and len(verdict.unaudited) == 1
    assert verdict.status(require=False) == 1


def test_the_allow_list_matches_any_alias_of_the_package_until_its_review_date() -> None:
    verdict = audit.judge(REPORT, [allowed()], TODAY)
    assert not verdict.findings and len(verdict.allowed) == 1
    assert verdict.status(require=False) == 0
    # The same advisory id for another package is not allowed.
    assert audit.judge(REPORT, [allowed(package="markupsafe")], TODAY).findings
    # Past its review date the entry fails the audit, though it still matches.
    late = audit.judge(REPORT, [allowed(review_by=dt.date(2026, 12, 6))], TODAY)
    assert late.stale and late.status(require=False) == 1


def test_packages_that_could_not_be_audited_fail_only_when_required() -> None:
    report = {"dependencies": [REPORT["dependencies"][2]]}
    verdict = audit.judge(report, [], TODAY)
    assert verdict.audited == 0 and verdict.unaudited
    assert verdict.status(require=False) == 0
    assert verdict.status(require=True) == 2


def test_the_shipped_allow_list_is_valid_and_entries_need_every_field(tmp_path: Path) -> None:
    assert isinstance(audit.load_allow_list(PATH.with_name("allow.toml")), list)
    bad = tmp_path / "allow.toml"
    bad.write_text('[[allow]]\nid = "X"\npackage = "p"\nreview_by = 2027-01-01\n')
    with pytest.raises(ValueError, match="lacks reason"):
        audit.load_allow_list(bad)
    bad.write_text('[[allow]]\nid = "X"\npackage = "p"\nreason = "r"\nreview_by = "soon"\n')
    with pytest.raises(ValueError, match="must be a date"):
        audit.load_allow_list(bad)
