"""The OpenAPI document, describing the API as it behaves: bearer keys on every route the Guard
keys, error answers as application/problem+json with their schema (and Retry-After on 503), and
the error codes each route can give. Routes list their codes with `errors(...)`; the document is
finished here in one pass rather than by repeating the problem schema on every route."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from broadcaster.api.guard import counts_as_write, needs_key
from broadcaster.api.problems import PROBLEM_JSON

SCHEME = "bearerAuth"
REASONS = {
    400: "The body is not valid JSON (or not UTF-8)",
    401: "No API key, or not a valid one",
    403: "The API key lacks the scope this route needs",
    404: "No such resource",
    409: "The request conflicts with the resource's state",
    413: "The body is larger than this route takes; refused before it is read",
    422: "A value is invalid; `detail` and `errors` name the field",
    429: "Too many requests of this kind; try again after Retry-After",
    503: "The database is unavailable or did not answer in time; try again after Retry-After",
}


class ProblemError(BaseModel):
    location: str = Field(examples=["area.coordinates[0][1]"])
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Invalid request",
                    "status": 422,
                    "detail": "expires_at: must be in the future",
                    "instance": "/v1/alerts",
                }
            ]
        }
    )
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    errors: list[ProblemError] | None = None


# OpenAPI links: what a created resource's answer leads to, with the parameter it gives (a
# runtime expression on the answer). Clients and schemathesis's stateful phase follow them.
# (path, method, status) -> [(link name, target path, target method, {parameter: expression})]
LINKS: dict[tuple[str, str, str], list[tuple[str, str, str, dict[str, str]]]] = {
    ("/v1/alerts", "post", "202"): [
        ("GetAlert", "/v1/alerts/{alert_id}", "get", {"alert_id": "$response.body#/id"}),
        ("CancelAlert", "/v1/alerts/{alert_id}/cancel", "post", {"alert_id": "$response.body#/id"}),
        ("GetTips", "/v1/alerts/{alert_id}/tips", "get", {"alert_id": "$response.body#/id"}),
    ],
    ("/v1/alerts/{alert_id}/cancel", "post", "200"): [
        ("GetAlert", "/v1/alerts/{alert_id}", "get", {"alert_id": "$response.body#/id"}),
    ],
    ("/v1/subscribers", "post", "201"): [
        ("GetSubscriber", "/v1/subscribers/{phone}", "get", {"phone": "$response.body#/phone"}),
        (
            "EraseSubscriber",
            "/v1/subscribers/{phone}",
            "delete",
            {"phone": "$response.body#/phone"},
        ),
    ],
    ("/v1/zones", "post", "201"): [
        ("GetZone", "/v1/zones/{zone_id}", "get", {"zone_id": "$response.body#/zones/0/id"}),
    ],
    ("/v1/templates", "post", "201"): [
        ("GetTemplate", "/v1/templates/{name}", "get", {"name": "$response.body#/name"}),
    ],
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that can answer these error codes (the content is added when
    the document is built)."""
    return {code: {"description": REASONS[code]} for code in codes}


def example(value: Any, media_type: str = "application/json") -> dict[str, Any]:
    """A 2xx answer's example, for a route whose answer has no model to carry one (merged with
    the schema FastAPI writes)."""
    return {"content": {media_type: {"example": value}}}


def _models_with_examples() -> dict[str, list[Any]]:
    """The examples of this service's models that have them, by model name (a name two models
    share with different examples is left out)."""
    found: dict[str, list[list[Any]]] = {}
    todo = list(BaseModel.__subclasses__())
    while todo:
        model = todo.pop()
        todo.extend(model.__subclasses__())
        extra = model.model_config.get("json_schema_extra")
        if model.__module__.startswith("broadcaster.") and isinstance(extra, dict):
            examples = extra.get("examples")
            if isinstance(examples, list) and examples not in found.get(model.__name__, []):
                found.setdefault(model.__name__, []).append(examples)
    return {name: examples[0] for name, examples in found.items() if len(examples) == 1}


def _restore_examples(document: dict[str, Any]) -> None:
    """Put back the nulls of the models' examples: FastAPI writes the document without None
    values, and so without the null members of every example (an answer's
    `"cancelled_at": null`), which then no longer match their schema. (An example given on a
    route, as with `example()`, loses them too: those have no nulls.)"""
    models = _models_with_examples()
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        model = name.removesuffix("-Input").removesuffix("-Output")
        if "examples" in schema and model in models:
            schema["examples"] = models[model]


def build(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    _restore_examples(document)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (ProblemDetails, ProblemError):
        schemas[model.__name__] = model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        schemas[model.__name__].pop("$defs", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key made with `broadcaster create-api-key`",
    }
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if needs_key(path):
                # The Guard looks the key up in the database before the route runs.
                operation["security"] = [{SCHEME: []}]
                for code in (401, 403, 503):
                    operation["responses"].setdefault(str(code), {"description": REASONS[code]})
            if needs_key(path) and counts_as_write(method.upper(), path):
                operation["responses"].setdefault("429", {"description": REASONS[429]})
            for code, response in operation.get("responses", {}).items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = problem
                    response.setdefault("description", REASONS.get(int(code), "Error"))
                    if code in ("429", "503"):
                        response["headers"] = {
                            "Retry-After": {
                                "description": "Seconds to wait before trying again",
                                "schema": {"type": "integer", "minimum": 0},
                            }
                        }
    add_links(document)
    app.openapi_schema = document
    return document


def add_links(document: dict[str, Any]) -> None:
    """Put LINKS on their answers, naming each target by its operationId."""
    paths = document.get("paths", {})
    for (path, method, status), links in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        found = response.setdefault("links", {})
        for name, target, target_method, parameters in links:
            operation = paths.get(target, {}).get(target_method)
            if operation is not None:
                found[name] = {
                    "operationId": operation["operationId"],
                    "parameters": parameters,
                }
