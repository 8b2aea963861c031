"""The OpenAPI document says what the API does: bearer security where the Guard wants a key,
every error answer as problem+json, the area as one of its three shapes, examples; and
schemathesis, run with every check against a live `broadcaster api` from that document, finds no
failure (fixed generation, bounded examples), and its stateful phase follows the document's links
(an alert created, then read, cancelled, its tips read; a subscriber created, read, erased; ...)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from jsonschema import Draft202012Validator
from tests.stack import Stack

from broadcaster.api.app import create_app
from broadcaster.api.guard import needs_key
from broadcaster.auth import create_api_key
from broadcaster.settings import load_settings

CONFIG = Path(__file__).parent / "data" / "schemathesis.toml"


def document() -> dict[str, Any]:
    return create_app(load_settings(), "postgresql://unused").openapi()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_keyed_routes_declare_the_bearer_scheme_and_others_do_not() -> None:
    doc = document()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key made with `broadcaster create-api-key`",
    }
    keyed = 0
    for path, _, op in operations(doc):
        if needs_key(path):
            keyed += 1
            assert op["security"] == [{"bearerAuth": []}], path
            assert {"401", "403"} <= set(op["responses"]), path
        else:
            assert "security" not in op, path
    assert keyed >= 4


def test_every_error_answer_is_problem_json_and_503_says_retry_after() -> None:
    doc = document()
    problem = {"$ref": "#/components/schemas/ProblemDetails"}
    for path, method, op in operations(doc):
        for code, response in op["responses"].items():
            if int(code) >= 400:
                assert response["content"] == {"application/problem+json": {"schema": problem}}, (
                    method,
                    path,
                    code,
                )
            if code == "503":
                assert "Retry-After" in response["headers"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    alerts = doc["paths"]["/v1/alerts"]["post"]["responses"]
    assert {"400", "401", "403", "413", "422", "503"} <= set(alerts)


def test_the_area_is_one_of_its_shapes_with_examples() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    area = schemas["AlertIn"]["properties"]["area"]
    refs = {one["$ref"].rsplit("/", 1)[1] for one in area["oneOf"]}
    assert refs == {
        "PolygonArea",
        "MultiPolygonArea",
        "CircleArea",
        "ZonesArea",
        "PostalCodesArea",
    }
    for name in ("AlertIn", "SubscriberIn", "CircleArea", "PolygonArea", "ProblemDetails"):
        assert schemas[name].get("examples"), name


def schema_named(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The component a `$ref` names (the schema itself when it is no reference)."""
    ref = schema.get("$ref", "")
    if not ref.startswith("#/components/schemas/"):
        return schema
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]


def examples_of(doc: dict[str, Any], media: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    """Each example a media type shows, with the schema it must satisfy: its own `example` or
    `examples`, else those of its schema (or the component it refers to), else for a page
    (`items` and `next_cursor`) those of its items' schema."""
    schema = media.get("schema", {})
    if "example" in media:
        return [(schema, media["example"])]
    if "examples" in media:
        return [(schema, one["value"]) for one in media["examples"].values()]
    named = schema_named(doc, schema)
    if named.get("examples"):
        return [(schema, one) for one in named["examples"]]
    items = named.get("properties", {}).get("items", {}).get("items", {})
    if "next_cursor" in named.get("properties", {}) and schema_named(doc, items).get("examples"):
        return [(items, one) for one in schema_named(doc, items)["examples"]]
    return []


def bodies_and_answers(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every request body and 2xx answer media type of every operation, named for messages."""
    found = []
    for path, method, op in operations(doc):
        for media_type, media in op.get("requestBody", {}).get("content", {}).items():
            found.append((f"{method.upper()} {path} request {media_type}", media))
        for code, response in op["responses"].items():
            if code.startswith("2"):
                for media_type, media in response.get("content", {}).items():
                    found.append((f"{method.upper()} {path} {code} {media_type}", media))
    return found


def test_every_body_and_answer_has_examples_its_schema_takes() -> None:
    doc = document()
    found = bodies_and_answers(doc)
    assert len(found) >= 35, len(found)
    missing = [name for name, media in found if not examples_of(doc, media)]
    assert not missing, f"no example: {missing}"
    wrong = []
    for name, media in found:
        for schema, example in examples_of(doc, media):
            # The components travel with the schema, so that its `#/components/...` resolve
            # (OpenAPI 3.1 schemas are JSON Schema 2020-12).
            validator = Draft202012Validator(
                {**schema, "components": doc["components"]},
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
            if name.split()[-1].endswith("json"):
                wrong += [
                    f"{name}: {e.json_path}: {e.message}" for e in validator.iter_errors(example)
                ]
            else:
                # Texts and XML: a non-empty string.
                if not (isinstance(example, str) and example.strip()):
                    wrong.append(f"{name}: not a text")
    assert not wrong, "\n".join(wrong)


# Its run takes about a minute on an idle machine; the subprocess has 300 s, and so the test.
@pytest.mark.timeout(330)
async def test_schemathesis_finds_nothing(stack: Stack, pool: asyncpg.Pool) -> None:
    stack.sim_url = "http://127.0.0.1:9"  # the API never calls the gateway here
    stack.write_config(rate=100)
    # Writes are limited per key; the run makes more than a real client would in a minute.
    stack.start_service("api", BROADCASTER_WRITES_PER_KEY_PER_MINUTE="100000")
    async with pool.acquire() as conn:
        key = await create_api_key(conn, "schemathesis")
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{stack.api_url}/openapi.json")).status_code == 200
    cli = Path(sys.executable).with_name("schemathesis")
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(cli),
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{stack.api_url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {key}",
            "--max-examples",
            "40",
            "--generation-deterministic",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=stack.tmp,
        stdin=subprocess.DEVNULL,
    )
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    summary = result.stdout.split("SUMMARY")[-1]
    assert " passed" in result.stdout and "failed" not in summary, report
    # The stateful phase ran: scenarios followed the links from created resources.
    assert re.search(r"✅\s+Stateful", summary), report
    scenarios = re.search(r"Scenarios:\s+(\d+)", result.stdout)
    assert scenarios is not None and int(scenarios.group(1)) > 0, report
    # The run went past authentication and reached the routes' own code.
    assert await pool.fetchval("SELECT count(*) FROM alerts") > 0, report


def test_created_resources_link_to_what_reads_and_changes_them() -> None:
    """OpenAPI links (followed by clients and by schemathesis's stateful phase): each names an
    operation that exists and fills exactly that operation's path parameters."""
    doc = document()
    by_id = {op["operationId"]: (path, method, op) for path, method, op in operations(doc)}
    found = {}
    for path, method, op in operations(doc):
        for code, response in op["responses"].items():
            for name, link in response.get("links", {}).items():
                target_path, target_method, target = by_id[link["operationId"]]
                wanted = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link["parameters"]) == wanted, (path, name)
                assert all(v.startswith("$response.body#/") for v in link["parameters"].values())
                found[(method, path, code, name)] = (target_method, target_path)
    assert found[("post", "/v1/alerts", "202", "GetAlert")] == ("get", "/v1/alerts/{alert_id}")
    assert found[("post", "/v1/alerts", "202", "CancelAlert")] == (
        "post",
        "/v1/alerts/{alert_id}/cancel",
    )
    assert found[("post", "/v1/subscribers", "201", "EraseSubscriber")] == (
        "delete",
        "/v1/subscribers/{phone}",
    )
    assert ("post", "/v1/zones", "201", "GetZone") in found
    assert ("post", "/v1/templates", "201", "GetTemplate") in found


def test_post_alerts_describes_the_cap_body_and_the_cancel_answer() -> None:
    op = document()["paths"]["/v1/alerts"]["post"]
    content = op["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/AlertIn"}
    cap = content["application/cap+xml"]
    assert cap["schema"]["type"] == "string"
    assert "urn:oasis:names:tc:emergency:cap:1.2" in cap["example"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CapCancelled"
    }
    assert "DTD" in op["responses"]["400"]["description"]
