"""Logs: one JSON object per line (or text for people), phone numbers masked, message texts
left out at info level, the request id on every line an API request causes."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator

import asyncpg
import pytest
from tests import ops_support
from tests.stack import Stack

from broadcaster.ops import logs


def record(message: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("broadcaster.test", level, __file__, 1, message, None, None)
    r.__dict__.update(extra)
    return r


@pytest.fixture
def root_level() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    before = root.level
    yield root
    root.setLevel(before)


def test_a_json_line_has_its_fields_masks_phones_drops_texts(root_level: logging.Logger) -> None:
    root_level.setLevel(logging.INFO)
    token = logs.REQUEST_ID.set("req-1")
    try:
        line = logs.JsonFormatter().format(
            record(
                "tip from +4520123456 stored",
                alert_id=7,
                gateway="primary",
                phone="+4520123456",
                text="Set ham ved stationen",
            )
        )
    finally:
        logs.REQUEST_ID.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "broadcaster.test"
    assert entry["event"] == "tip from +45******56 stored"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert (entry["alert_id"], entry["gateway"], entry["request_id"]) == (7, "primary", "req-1")
    assert entry["phone"] == "+45******56"
    assert "text" not in entry
    assert "20123456" not in line


def test_texts_are_logged_at_debug_level_only(root_level: logging.Logger) -> None:
    root_level.setLevel(logging.DEBUG)
    entry = json.loads(logs.JsonFormatter().format(record("sms", text="Hej", level=10)))
    assert entry["text"] == "Hej"


def test_an_exception_is_one_field_of_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        r = record("failed", level=logging.ERROR)
        r.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(r)
    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["exception"]


def test_text_format_for_people(root_level: logging.Logger) -> None:
    root_level.setLevel(logging.INFO)
    text = logs.formatter("text").format(record("sent to 4520123456", gateway="primary"))
    assert re.search(r" INFO broadcaster\.test: sent to 452\*+56 gateway=primary$", text), text
    with pytest.raises(ValueError, match="BROADCASTER_LOG_FORMAT"):
        logs.formatter("xml")


async def test_the_service_logs_json_without_phone_numbers(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    key, _ = await ops_support.seed(pool, subscribers=100)
    phones = [r["phone"] for r in await pool.fetch("SELECT phone FROM subscribers")]
    ops_support.start(stack, BROADCASTER_LOG_LEVEL="info")
    await ops_support.broadcast(stack, key)
    service = next(c for c in stack.children if c.name == "serve")
    lines = service.log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "event"} <= e.keys() for e in entries)
    created = [e for e in entries if e["event"] == "alert created"]
    assert len(created) == 1 and created[0]["alert_id"] == 1
    assert re.fullmatch(r"[0-9a-f]{32}", created[0]["request_id"])
    assert any(e["event"] == "dispatcher started" for e in entries)
    text = "\n".join(lines)
    assert not [p for p in phones if p[1:] in text]
    assert "Politiet efterlyser vidner" not in text
