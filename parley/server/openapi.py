"""``/openapi.json``, generated from the route table and the wire types."""

from __future__ import annotations

from typing import Any

import msgspec

from parley import __version__
from parley.server.http_api import ENDPOINTS as API_ENDPOINTS
from parley.server.leaving_api import LEAVING_ENDPOINTS
from parley.wire import ErrorBody

ENDPOINTS = [*API_ENDPOINTS, *LEAVING_ENDPOINTS]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_document() -> dict[str, Any]:
    types: set[type] = {ErrorBody}
    for endpoint in ENDPOINTS:
        types.update(t for t in (endpoint.request, endpoint.response) if t is not None)
    _, components = msgspec.json.schema_components(
        sorted(types, key=lambda t: t.__name__), ref_template="#/components/schemas/{name}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        operation: dict[str, Any] = {"summary": endpoint.summary, "responses": {}}
        if endpoint.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(endpoint.request.__name__)}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if endpoint.response is not None:
            ok["content"] = {"application/json": {"schema": _ref(endpoint.response.__name__)}}
        operation["responses"][str(endpoint.status)] = ok
        operation["responses"]["4XX"] = {
            "description": "A request the server refuses; the body says why",
            "content": {"application/json": {"schema": _ref("ErrorBody")}},
        }
        if endpoint.auth:
            operation["security"] = [{"device": []}]
        parameters = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in endpoint.path.split("/")
            if part.startswith("{")
        ]
        if parameters:
            operation["parameters"] = parameters
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Parley", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "device": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The device credential from POST /v1/devices: <device_id>.<secret>",
                }
            },
        },
    }
