"""What a request may cost the server, enforced before any image is decoded.

``LimitsMiddleware`` wraps the whole ASGI app: a ``Content-Length`` over ``max_bytes`` is
answered 413 without reading the body; a body that grows past ``max_bytes`` anyway (chunked,
or a lying length) is cut off at the first byte over; a body that stalls longer than
``read_timeout`` between chunks, or takes longer than ``body_timeout`` in all, is answered 408;
more than ``max_active`` requests in flight get 503 at once. ``check_pixels`` refuses an image
whose header claims more than ``max_pixels`` before a pixel is decoded. Every refusal is an
``ApiError``: a status and one line a person can act on, answered as
``{"success": false, "error": ...}``.
"""
from __future__ import annotations

import asyncio
import io
import json
import time
from dataclasses import dataclass

from PIL import Image
from starlette.exceptions import HTTPException

from stages.shared.images import DECODE_ERRORS

MAX_PIXELS = 40_000_000     # the crawl's default crawl.max_pixels


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 << 20        # request body, multipart overhead included
    max_pixels: int = MAX_PIXELS     # width x height from the image header
    max_files: int = 64              # images per /classify/batch request
    read_timeout: float = 5.0        # seconds a client may stall (headers, or between body chunks)
    body_timeout: float = 60.0       # seconds a whole body may take to arrive
    max_active: int = 512            # requests in flight (each holds up to max_bytes)


class ApiError(HTTPException):
    """A refusal with a status and a message for a person; ``close`` drops the connection after."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(status_code=status, detail=message,
                         headers={"connection": "close"} if close else None)


def error_body(message: str) -> bytes:
    return json.dumps({"success": False, "error": message}).encode()


def check_pixels(data: bytes, name: str, max_pixels: int) -> None:
    """Parse the header only: refuse a non-image (400) or one over ``max_pixels`` (413)."""
    try:
        with Image.open(io.BytesIO(data)) as img:      # reads the header, decodes nothing
            width, height = img.size
    except Image.DecompressionBombError:               # over Pillow's own hard limit
        raise ApiError(413, f"{name}: refused before decoding, more pixels than Pillow allows "
                            f"(this server's limit: {max_pixels} pixels)") from None
    except DECODE_ERRORS as err:
        raise ApiError(400, f"{name}: not an image this server can read "
                            f"({err.__class__.__name__}; send a JPEG, PNG, WebP, GIF, BMP or TIFF)") from None
    if width * height > max_pixels:
        raise ApiError(413, f"{name}: refused before decoding, too many pixels "
                            f"({width}x{height} = {width * height} > {max_pixels})")


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared body length (the HTTP layer has already refused a malformed one)."""
    for key, value in headers:
        if key == b"content-length":
            return int(value)
    return None


class LimitsMiddleware:
    """Body size, body read timeouts and requests in flight, for every HTTP request."""

    def __init__(self, app, limits: Limits):
        self.app = app
        self.limits = limits
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope["headers"])
        if declared is not None and declared > self.limits.max_bytes:
            return await self._refuse(send, 413, f"request body of {declared} bytes is over the "
                                                 f"{self.limits.max_bytes}-byte limit (--max-bytes)")
        if self.active >= self.limits.max_active:
            return await self._refuse(send, 503, f"server busy: {self.active} requests in flight "
                                                 "(--max-active); retry shortly")
        self.active += 1
        try:
            await self.app(scope, self._guarded(receive), send)
        finally:
            self.active -= 1

    def _guarded(self, receive):
        limits, received = self.limits, 0
        deadline = time.monotonic() + limits.body_timeout

        async def guarded_receive():
            nonlocal received
            wait = min(limits.read_timeout, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.001))
            except asyncio.TimeoutError:
                raise ApiError(408, f"request body not received in time (client stalled over "
                                    f"{limits.read_timeout:g} s, or the body took over "
                                    f"{limits.body_timeout:g} s); connection closed", close=True) from None
            received += len(message.get("body", b""))
            if received > limits.max_bytes:
                raise ApiError(413, f"request body over the {limits.max_bytes}-byte limit "
                                    "(--max-bytes); the rest was not read")
            return message
        return guarded_receive

    @staticmethod
    async def _refuse(send, status: int, message: str) -> None:
        body = error_body(message)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
