"""The component schemas of `/openapi.json`; image requests come from `ImageRequest` itself."""

from __future__ import annotations

from typing import Any, get_args

from gateway.catalog import Kind
from gateway.requests import ImageRequest

Schema = dict[str, Any]
REF = "#/components/schemas/{model}"
BINARY: Schema = {"type": "string", "contentMediaType": "application/octet-stream"}


def ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def _object(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def _edit_form(request: Schema) -> Schema:
    """An edit as multipart: the same fields as form values, reference images as file parts."""
    properties = dict(request["properties"])
    files = {"type": "array", "items": BINARY}
    properties["image"] = {
        "anyOf": [BINARY, files, *request["properties"]["image"]["anyOf"]],
        "description": "Reference images as files (or URLs), mapped in order to input_image…",
    }
    properties["image[]"] = {**files, "description": "Reference image files, in order"}
    return {"type": "object", "properties": properties, "required": request["required"]}


def _meter(kind: str, **extra: Schema) -> Schema:
    """Used now against the limit (null: no limit)."""
    return _object(["used", "limit"], used={"type": kind}, limit={"type": [kind, "null"]}, **extra)


def console_schemas() -> Schema:
    nullable_int = {"type": ["integer", "null"]}
    series = {"type": "array", "items": {"type": "integer"}}
    return {
        "ConsoleImage": _object(
            ["id", "url", "created", "model", "size", "content_type"],
            id={"type": "string"},
            url={"type": "string", "format": "uri"},
            created={"type": "number", "description": "unix time"},
            model={"type": "string"},
            seed=nullable_int,
            size={"type": "integer", "description": "bytes"},
            content_type={"enum": ["image/png", "image/jpeg", "image/webp"]},
            request_id={"type": "string"},
            prompt={
                "type": ["string", "null"],
                "description": "Only with cache.keep_prompts, and only to the team that made it",
            },
        ),
        "ConsoleImagePage": _object(
            ["data", "next_before"],
            object={"const": "list"},
            data={"type": "array", "items": ref("ConsoleImage")},
            next_before={
                "type": ["number", "null"],
                "description": "`before` of the next page; null at the end",
            },
        ),
        "TeamUsage": _object(
            ["team", "requests_this_minute", "in_flight", "images_today", "spend_this_month_usd"],
            team={"type": "string"},
            models={"type": "array", "items": {"type": "string"}},
            requests_this_minute=_meter("integer", resets_in_s={"type": "number"}),
            in_flight=_meter("integer"),
            images_today=_meter("integer"),
            spend_this_month_usd=_meter("number"),
        ),
        "UsageSeries": _object(
            ["days", "data"],
            object={"const": "list"},
            days={"type": "array", "items": {"type": "string", "format": "date"}},
            data={
                "type": "array",
                "items": _object(
                    ["team", "requests", "images", "spend_usd", "errors", "rate_limited"],
                    team={"type": "string"},
                    requests=series,
                    images=series,
                    spend_usd={"type": "array", "items": {"type": "number"}},
                    errors=series,
                    rate_limited=series,
                ),
            },
        ),
        "ErrorLog": _object(
            ["data"],
            object={"const": "list"},
            data={
                "type": "array",
                "items": _object(
                    ["time", "status", "code", "request_id", "message"],
                    time={"type": "number", "description": "unix time"},
                    status={"type": "integer"},
                    type={"type": "string"},
                    code={"type": ["string", "null"]},
                    team={"type": ["string", "null"]},
                    model={"type": ["string", "null"]},
                    route={"type": "string"},
                    request_id={"type": "string"},
                    message={"type": "string"},
                ),
            },
        ),
    }


def schemas() -> Schema:
    """Every schema the paths refer to, by name."""
    request = ImageRequest.model_json_schema(ref_template=REF)
    found: Schema = request.pop("$defs", {})
    nullable = {"type": ["string", "null"]}
    counts = {name: {"type": "integer"} for name in ("requests", "images", "errors")}
    day = _object([], **counts, rate_limited={"type": "integer"}, spend_usd={"type": "number"})
    key = _object(
        ["fingerprint", "state"],
        fingerprint={"type": "string"},
        state={"enum": ["healthy", "cooling", "disabled"]},
        in_flight={"type": "integer"},
        cooldown_until={**nullable, "format": "date-time"},
        recheck_at={**nullable, "format": "date-time"},
        last_error=nullable,
    )
    upstream = _object(
        ["name", "keys"],
        name={"type": "string"},
        kind={"enum": list(get_args(Kind))},
        priority={"type": "integer"},
        models={"type": "array", "items": {"type": "string"}},
        keys={"type": "array", "items": ref("UpstreamKey")},
    )
    return found | {
        "ImageRequest": request,
        "ImageEditForm": _edit_form(request),
        "Image": _object(
            [],
            url={"type": "string", "format": "uri"},
            b64_json={"type": "string", "contentEncoding": "base64"},
            revised_prompt={"type": "string"},
            seed={"type": "integer"},
        ),
        "ImagesResponse": _object(
            ["created", "data"],
            created={"type": "integer"},
            data={"type": "array", "items": ref("Image")},
        ),
        "Model": _object(
            ["id", "object", "created", "owned_by"],
            id={"type": "string"},
            object={"const": "model"},
            created={"type": "integer"},
            owned_by={"type": "string"},
            flux={"type": "object", "description": "The model's limits and serving upstreams"},
        ),
        "ModelList": _object(
            ["object", "data"],
            object={"const": "list"},
            data={"type": "array", "items": ref("Model")},
        ),
        "Error": _object(
            ["error"],
            error=_object(
                ["message", "type", "param", "code"],
                message={"type": "string"},
                type={"type": "string"},
                param=nullable,
                code=nullable,
            ),
        ),
        "UsageDay": _object(
            ["date"], date={"type": "string", "format": "date"}, **day["properties"]
        ),
        "UsageReport": _object(
            ["since", "until", "data"],
            since={"type": "string", "format": "date"},
            until={"type": "string", "format": "date"},
            data={
                "type": "array",
                "items": _object(
                    ["team", "totals", "days"],
                    team={"type": "string"},
                    totals=day,
                    days={"type": "array", "items": ref("UsageDay")},
                ),
            },
        ),
        "UpstreamKey": key,
        "Upstream": upstream,
        "UpstreamList": _object(["data"], data={"type": "array", "items": ref("Upstream")}),
        "Readiness": _object(
            ["ready", "checks"],
            ready={"type": "boolean"},
            checks={"type": "object", "additionalProperties": {"type": "boolean"}},
        ),
        **console_schemas(),
    }
