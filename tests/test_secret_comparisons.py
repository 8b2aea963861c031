"""Secrets are compared in constant time: no `==`/`!=` in the service, the adapters or the
simulators compares a signature, a secret, a token, a digest, a password or a code hash (each
goes through `hmac.compare_digest`), read from the source so that a new comparison fails here.
API keys are looked up by their SHA-256 hash in the database, never compared as text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SECRETISH = re.compile(r"signature|secret|token|digest|password|code_hash|key_hash|csrf", re.I)
# Comparisons with these are about presence or form, not a secret's value.
HARMLESS = (ast.Constant,)


def _names(node: ast.AST) -> str:
    return " ".join(
        n.id if isinstance(n, ast.Name) else n.attr
        for n in ast.walk(node)
        if isinstance(n, ast.Name | ast.Attribute)
    )


def secret_comparisons(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        if any(isinstance(o, HARMLESS) for o in operands):
            continue  # token == "" or status != 200: no secret on both sides
        if any(SECRETISH.search(_names(o)) for o in operands):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


# Equalities the scan finds that compare no secret an attacker could probe, and why.
ALLOWED = {
    # SHA-256 of the shipped zone files against the one loaded: public data, no secret.
    ("broadcaster/ingest/zone_files.py", "loaded.get(name) != _digest(name)"),
    # The CSRF token's length, not its value.
    ("broadcaster/web/pages.py", "len(token) == _TOKEN_CHARS"),
    # Whether the page must set the cookie: the browser's own token against the one the page
    # carries (its own, or a new one); the check of a post is csrf_ok's compare_digest.
    ("broadcaster/web/pages.py", "request.cookies.get(CSRF_COOKIE) != token"),
}


def test_no_secret_is_compared_with_equality() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += secret_comparisons(path.read_text(encoding="utf-8"), str(path.relative_to(SRC)))
    unexplained = [f for f in found if (f.split(":", 1)[0], f.split(": ", 1)[1]) not in ALLOWED]
    assert unexplained == []
    assert len(found) == len(ALLOWED)  # an allowance that no longer matches is removed


def test_the_scan_finds_an_equality_on_a_signature() -> None:
    code = "def ok(a, b):\n    return expected_signature == b\n"
    assert secret_comparisons(code, "x.py") == ["x.py:2: expected_signature == b"]
    safe = "import hmac\ndef ok(a, b):\n    return hmac.compare_digest(a.signature, b)\n"
    assert secret_comparisons(safe, "x.py") == []
