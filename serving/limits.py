"""Limits that bound what one client can make the service hold: body bytes, header bytes, time.

Three layers, because each limit can only be enforced where the bytes are:

* **Body** (:class:`BodyLimit`, ASGI middleware): the body is read here, whatever its transfer
  encoding (``Content-Length`` or chunked), counting bytes as they arrive; past
  ``max_body_bytes`` the request gets 413 and the rest is never read. A body that stops arriving
  (shorter than its declared length, or trickled) gets 408 once ``body_timeout_s`` has passed
  since its first byte was awaited. The app receives the body already read, so no handler can
  be made to hold more.
* **Headers** (:class:`LimitedH11Protocol`, uvicorn's h11 protocol): headers larger than
  ``max_header_bytes`` are refused by h11 (400) before they are buffered further, and a
  connection whose request line and headers are not complete ``header_timeout_s`` after it
  opened (or after its previous response) is closed. uvicorn's httptools protocol has neither
  limit, so :func:`uvicorn_limits` selects h11.
* **Idle keep-alive connections** are closed after ``keep_alive_s`` (uvicorn's own timer).

:func:`uvicorn_limits` turns a :class:`~omnisearchsage.serving.config.ServeConfig` into
the keyword arguments of ``uvicorn.run``.
"""
from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import h11
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from omnisearchsage.serving.config import ServeConfig


async def _error(send: Send, status: int, code: str, message: str) -> None:
    """The service's one error shape (see ``service.error_response``), sent straight over ASGI; the
    connection is closed after it, since the rest of the request body is not read."""
    body = orjson.dumps({"error": {"code": code, "message": message, "details": []}})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Pure ASGI middleware: read each request body in full, bounded in bytes and time, before the app.

    Buffering is what makes the limit hold for chunked bodies too: the app never starts on a body
    that has not been counted. The service's bodies are small JSON documents, which every handler
    reads whole anyway, so this costs no extra memory.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app, self.max_body_bytes, self.body_timeout_s = app, max_body_bytes, body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _error(send, 413, "body_too_large",
                         f"request body is {int(declared)} bytes; the limit is {self.max_body_bytes}")
            return
        chunks, size = [], 0
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                await _error(send, 408, "body_timeout",
                             f"request body incomplete after {self.body_timeout_s:g} s ({size} bytes received)")
                return
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await _error(send, 413, "body_too_large",
                             f"request body is over {self.max_body_bytes} bytes (the limit); stopped reading")
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request line and headers (slowloris).

    The deadline is armed when the connection opens and after each response, and disarmed once
    h11 has parsed a request's headers; when it fires with headers still incomplete, the
    connection is closed. (The header size limit is h11's own ``max_incomplete_event_size``.)
    """

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose headers were incomplete after %g s", self.header_timeout_s)
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a request's headers are in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_limits(cfg: ServeConfig) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` that enforce ``cfg``'s header and connection limits."""
    return {
        "http": functools.partial(LimitedH11Protocol, header_timeout_s=cfg.header_timeout_s),
        "h11_max_incomplete_event_size": cfg.max_header_bytes,
        "timeout_keep_alive": cfg.keep_alive_s,
    }
