"""Request bounds of the lookup service, and the version header on every answer.

Over a bound the client gets a 413 (body) or a 422 with a short message that never echoes
the offending input: FastAPI's own validation errors carry the input, which for a 50 MB id
is a 100 MB answer, and for NaN cannot even be encoded as JSON (a 500).
"""
from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from embedlib.config import ServeConfig

VERSION_HEADER = "X-Embedlib-Version"
# Worst-case JSON bytes of one float32 value as Python prints it ("-1.2345678901234567e-05,"),
# of one character of an id (a character beyond the BMP is escaped as two \uXXXX), and of
# one neighbour beyond its id ({"id":"","score":<float>},).
FLOAT_BYTES, ID_CHAR_BYTES, NEIGHBOR_BYTES = 24, 12, 45


class BoundError(HTTPException):
    """A request over a configured bound; ``detail`` says which, never what was sent."""

    def __init__(self, detail: str, status_code: int = 422):
        super().__init__(status_code=status_code, detail=detail)


class GuardMiddleware:
    """Pure ASGI: a body over ``max_body_bytes`` answers 413 (Content-Length or counted while
    it streams in), and every answer carries the header of the version that answered it:
    ``scope["state"]["version"]``, set by the endpoint from its snapshot, else ``current()``."""

    def __init__(self, app, max_body_bytes: int, current: Callable[[], str | None]):
        self.app, self.max_body_bytes, self.current = app, max_body_bytes, current

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        limit = self.max_body_bytes
        too_large = BoundError(f"request body over serve.max_body_bytes ({limit} bytes)", 413)

        async def send_with_version(message):
            if message["type"] == "http.response.start":
                version = state.get("version") or self.current() or ""
                message = {**message, "headers": [*message.get("headers", []),
                                                  (VERSION_HEADER.lower().encode(), version.encode())]}
            await send(message)

        length = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            response = JSONResponse({"detail": too_large.detail}, status_code=413)
            return await response(scope, receive, send_with_version)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large
            return message

        await self.app(scope, counted_receive, send_with_version)


async def short_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming the fields and what is wrong with them, without the input."""
    errors = [{"loc": [str(part)[:64] for part in e.get("loc", ())], "msg": str(e.get("msg", ""))[:200]}
              for e in exc.errors()[:10]]
    return JSONResponse(status_code=422, content={"detail": errors})


def check_ids(ids: list[str], cfg: ServeConfig) -> None:
    """Batch size and id length bounds."""
    if len(ids) > cfg.max_batch_ids:
        raise BoundError(f"at most serve.max_batch_ids = {cfg.max_batch_ids} ids per request, "
                         f"got {len(ids)}")
    longest = max(map(len, ids), default=0)
    if longest > cfg.max_id_length:
        raise BoundError(f"ids are at most serve.max_id_length = {cfg.max_id_length} characters; "
                         f"one has {longest}")


def check_neighbors(n_ids: int, k: int, cfg: ServeConfig) -> None:
    """k and the neighbours per request (ids x k) bounds."""
    if k > cfg.max_k:
        raise BoundError(f"k must be <= {cfg.max_k}, got {k}")
    if n_ids * k > cfg.max_neighbors:
        raise BoundError(f"{n_ids} ids x k={k} = {n_ids * k} neighbours, over "
                         f"serve.max_neighbors = {cfg.max_neighbors}; ask for fewer ids or a smaller k")


def check_response_size(estimate: int, cfg: ServeConfig) -> None:
    """``estimate``: a worst-case size in bytes of the answer, computed before any work."""
    if estimate > cfg.max_response_bytes:
        raise BoundError(f"the answer could reach {estimate} bytes, over serve.max_response_bytes = "
                         f"{cfg.max_response_bytes}; ask for fewer ids or a smaller k")


def vectors_bytes(ids: list[str], dim: int) -> int:
    """Worst case of /vectors: each id twice (asked, returned), found flags, vectors."""
    return sum(2 * ID_CHAR_BYTES * len(i) + 16 for i in ids) + len(ids) * dim * FLOAT_BYTES


def neighbors_bytes(ids: list[str], k: int, max_id_length: int) -> int:
    """Worst case of /similar: the query ids and k neighbours each (ids up to max_id_length)."""
    per_neighbor = ID_CHAR_BYTES * max_id_length + NEIGHBOR_BYTES
    return sum(ID_CHAR_BYTES * len(i) + 8 for i in ids) + len(ids) * k * per_neighbor
