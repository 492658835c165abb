"""Every error of the API as RFC 9457 problem details (``application/problem+json``): what was wrong, in words,
never a traceback or a server path."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

LOGGER = logging.getLogger("fer_core.serve")
TITLES = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed",
          406: "Not acceptable", 409: "Conflict", 413: "Content too large", 415: "Unsupported media type",
          422: "Unprocessable content", 500: "Internal server error", 503: "Service unavailable"}


class Problem(Exception):
    """An error answered as problem details: ``status``, ``detail`` (what was wrong and what to do), optional
    ``headers`` (e.g. Retry-After)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def problem_response(status: int, detail: str, instance: str = "", headers: dict | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(exc.status, exc.detail, request.url.path, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "Error")
        return problem_response(exc.status_code, detail, request.url.path, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = []
        for error in exc.errors()[:5]:
            where = ".".join(str(x) for x in error.get("loc", ()) if x not in ("query", "body", "path"))
            parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid"))
        return problem_response(422, "; ".join(parts) or "invalid request", request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # a defect: logged here, never shown to the client
        LOGGER.exception("unexpected error on %s", request.url.path)
        return problem_response(500, "The server failed on this request; it is logged on the server.",
                                request.url.path)
