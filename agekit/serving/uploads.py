"""What the service does with a request body before any model sees it: size and time limits, and the
HTTP code for each kind of bad image.

The size limit sits in front of the framework as a small ASGI middleware because FastAPI/Starlette
spool a multipart upload of any size to disk before the route runs; this refuses a body larger than
``max_bytes`` while it arrives (or from its Content-Length) and never stores more than the limit.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..data.imageio import ImageLoadError, ImageTooLargeError, NotAnImageError

__all__ = ["BodyLimit", "error_body", "image_error_status", "one_line", "FORM_SLACK"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FORM_SLACK = 64 * 1024  # multipart framing (boundaries, part headers) on top of the file itself
DRAIN_CAP = 64 * 1024 * 1024  # read (and drop) at most this much of a refused body, so the client sees the 413


def one_line(msg: object) -> str:
    return " ".join(str(msg).split()) or "error"


def error_body(msg: object) -> bytes:
    """The one error shape of the API: ``{"error": "..."}`` on one line."""
    return json.dumps({"error": one_line(msg)}, separators=(",", ":")).encode()  # as JSONResponse writes it


def image_error_status(e: ImageLoadError) -> int:
    """413 for too many pixels, 415 for what is not an image, 400 for a corrupt, truncated or empty one."""
    if isinstance(e, ImageTooLargeError):
        return 413
    if isinstance(e, NotAnImageError):
        return 415
    return 400


async def send_error(send: Send, status: int, msg: object, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = error_body(msg)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Read a POST body up to ``max_bytes`` (+ form framing) within ``timeout`` seconds, then hand it on.

    Too large (declared or sent): 413; not complete in time (a slow or stalled upload): 408. The body
    is handed to the app in one piece, so the app's own parsing never waits on the network.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limit = max_bytes + FORM_SLACK
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        too_big = f"upload too large: more than {self.max_bytes} bytes (the server's --max-bytes)"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _drain(receive, DRAIN_CAP)
            await send_error(send, 413, too_big, [(b"connection", b"close")])
            return
        try:
            body = await asyncio.wait_for(_read_body(receive, self.limit), self.timeout)
        except asyncio.TimeoutError:
            await send_error(send, 408, f"upload not received within {self.timeout:g} s (the server's --upload-timeout)",
                             [(b"connection", b"close")])
            return
        if body is None:  # the client went away
            return
        if len(body) > self.limit:
            await _drain(receive, DRAIN_CAP)
            await send_error(send, 413, too_big, [(b"connection", b"close")])
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect, as a server would

        await self.app(scope, replay, send)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or its first ``limit + 1`` bytes and no more once it is known to be too large; None on
    disconnect."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit or not message.get("more_body", False):
            return b"".join(chunks)[:limit + 1]


async def _drain(receive: Receive, cap: int) -> None:
    """Read and drop the rest of a refused body (up to ``cap`` bytes, 5 s) so the client gets to read the answer."""
    async def drain() -> None:
        seen = 0
        while seen < cap:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(drain(), 5)
    except asyncio.TimeoutError:
        return
