"""The citizens' pages while PostgreSQL is away: a 503 page in the page's language with
Retry-After, never JSON or a stack trace; a form posted meanwhile is not taken, and the same
pages work again once the server is back. Runs on a private PostgreSQL (tests/pgserver.py)
that is stopped and started."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from tests.pgserver import PrivateServer
from tests.stack import Stack
from tests.test_pg_restart import new_database

from broadcaster.web.texts import WORDS

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    private = PrivateServer()
    try:
        private.start()
        yield private
    finally:
        private.destroy()


@pytest.fixture
async def api(server: PrivateServer, tmp_path: Path) -> AsyncIterator[Stack]:
    stack = Stack(await new_database(server), tmp_path / "logs", tmp_path)
    try:
        stack.start_simulator()
        stack.write_config(rate=100)
        stack.start_service("api")
        yield stack
    finally:
        for child in reversed(stack.children):
            child.stop()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def test_pages_answer_503_pages_while_the_database_is_away(
    api: Stack, server: PrivateServer
) -> None:
    async with httpx.AsyncClient(base_url=api.api_url, timeout=10) as http:
        leave = await http.get("/afmeld")
        assert leave.status_code == 200
        token = csrf_of(leave.text)
        server.stop("fast")
        try:
            # The sign-up pages list the postal codes from the database; the leave page needs
            # it only when posted.
            assert (await http.get("/afmeld")).status_code == 200
            for path, language in (("/tilmeld", "da"), ("/en/signup", "en")):
                page = await http.get(path)
                assert page.status_code == 503, (path, page.text[:200])
                assert page.headers["content-type"].startswith("text/html")
                assert page.headers["retry-after"]
                assert f'lang="{language}"' in page.text
                assert WORDS[language]["error_text"] in page.text
                assert "Traceback" not in page.text and not page.text.lstrip().startswith("{")
            posted = await http.post("/afmeld", data={"csrf": token, "phone": "20 12 34 56"})
            assert posted.status_code == 503
            assert posted.headers["content-type"].startswith("text/html")
        finally:
            server.start()
        # Back: the pool reconnects by itself, nothing restarted by hand.
        for _ in range(100):
            again = await http.get("/tilmeld")
            if again.status_code == 200:
                break
        assert again.status_code == 200 and "3400" in again.text
