"""The service's one error shape and the handlers that produce it (never a bare 500 for bad input)::

    {"error": {"code": "query_too_long", "message": "...", "details": [...]}}
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the service refuses: becomes ``{"error": {...}}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []


def json_response(payload: Any, status: int = 200) -> Response:
    # orjson writes float32 numpy arrays directly, several times faster than json + tolist().
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    """The one error shape every 4xx/5xx of the service has."""
    return json_response({"error": {"code": code, "message": message, "details": details or []}}, status)


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc)


async def _on_api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    # Replaces FastAPI's default 422 body. "input" is left out: it can be a 1 MiB string.
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    details = [
        {"loc": _loc(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", "request body is not valid JSON", details)
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:
        # FastAPI only parses a body declared as JSON (`curl -d` declares a form by default).
        return error_response(
            415,
            "unsupported_media_type",
            f"send the body as JSON with Content-Type: application/json, not {content_type!r}",
        )
    first = details[0] if details else {"loc": "body", "message": "invalid request"}
    return error_response(422, "invalid_request", f"{first['loc']}: {first['message']}", details)


async def _on_http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    return error_response(exc.status_code, code, str(exc.detail))


async def _on_unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def register_error_handlers(app: FastAPI) -> None:
    """Route every exception a request can raise to :func:`error_response`."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
