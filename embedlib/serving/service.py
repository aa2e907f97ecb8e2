"""HTTP lookups over an EmbeddingIndex (FastAPI): vectors and similar items, one or batched.

Unknown ids answer 404 with the ids named; bad parameters (k out of range, unknown metric,
empty id lists, NaN) answer 422, and requests over a bound (``serve.max_*``) 413 or 422, with
short messages that never echo the input (``limits.py``). Every answer carries the version
that answered it in the ``X-Embedlib-Version`` header: each request uses one snapshot of the
served version (``follow.py``), so a hot swap never changes the index under a request.
Batch endpoints run in FastAPI's thread pool; GET /similar is micro-batched
(``batching.py``) unless ``serve.batch_wait_ms`` is 0. GET and POST /similar answer 503 when
their answer takes longer than ``serve.request_timeout_s``. /similar for known ids with k <=
K, the table's metric and exclude_self is answered from the version's precomputed neighbours
when its manifest names them (``precomputed.py``); everything else by the exact search. The
answer says which (``source``).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import os
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from embedlib import __version__
from embedlib.config import METRICS, ServeConfig
from embedlib.manifest import ManifestError
from embedlib.serving import limits
from embedlib.serving.batching import MicroBatcher
from embedlib.serving.follow import ServedVersion, VersionFollower
from embedlib.serving.index import EmbeddingIndex, ServingError, TopKResult, UnknownIdError

Metric = Literal[METRICS]
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class VectorsRequest(BaseModel):
    # Unknown keys are refused, so that nothing in a request (NaN included) goes unchecked.
    model_config = ConfigDict(extra="forbid")
    ids: list[str] = Field(min_length=1)


class SimilarRequest(VectorsRequest):
    k: int | None = Field(default=None, ge=1)
    metric: Metric | None = None
    exclude_self: bool = True


def create_app(served: EmbeddingIndex | VersionFollower, cfg: ServeConfig | None = None,
               version: str | None = None) -> FastAPI:
    """The lookup service over an index (served as it is, ``version`` e.g. its dt) or over a
    VersionFollower (hot swaps, POST /admin/reload)."""
    cfg = cfg or ServeConfig()
    follower = served if isinstance(served, VersionFollower) else \
        VersionFollower(ServedVersion.of(served, version), cfg)
    batcher = MicroBatcher(cfg.batch_wait_ms / 1000, cfg.batch_max) if cfg.batch_wait_ms else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        follower.start()
        yield
        follower.stop()

    app = FastAPI(title="embedlib lookup", version=__version__, lifespan=lifespan)
    app.state.follower = follower
    app.add_middleware(limits.GuardMiddleware, max_body_bytes=cfg.max_body_bytes,
                       current=lambda: follower.current.version)
    app.add_exception_handler(RequestValidationError, limits.short_validation_error)
    app.add_exception_handler(UnknownIdError, _unknown_ids)
    app.add_exception_handler(ServingError, _bad_request)

    def snapshot(request: Request) -> ServedVersion:
        served = follower.current
        request.state.version = served.version
        return served

    @app.get("/health")
    def health(request: Request) -> dict:
        return _health(follower, snapshot(request), batcher)

    @app.get("/vector")
    def vector(request: Request, id: str = Query(min_length=1, description="an id of the index")):
        limits.check_ids([id], cfg)
        found = snapshot(request).index.lookup([id], unknown_ids="error")
        return _json({"id": id, "vector": found.vectors[0].tolist()})

    @app.post("/vectors")
    def vectors(request: Request, body: VectorsRequest):
        limits.check_ids(body.ids, cfg)
        index = snapshot(request).index
        limits.check_response_size(limits.vectors_bytes(body.ids, index.dim), cfg)
        found = index.lookup(body.ids)
        return _json({"ids": found.ids.tolist(), "vectors": found.vectors.tolist(),
                      "found": found.found.tolist(), "n_unknown": found.n_unknown})

    @app.get("/similar")
    async def similar(request: Request,
                      id: str = Query(min_length=1, description="an id of the index"),
                      k: int = Query(cfg.k, ge=1, le=cfg.max_k),
                      metric: Metric | None = None, exclude_self: bool = True):
        limits.check_ids([id], cfg)
        served = snapshot(request)
        result, source = await _top_k(served, [id], k, metric, exclude_self, cfg.request_timeout_s,
                                      batcher, unknown_ids="error")
        return _json({"id": id, "k": k, "metric": metric or served.index.metric, "source": source,
                      "neighbors": _neighbors(result)[0]})

    @app.post("/similar")
    async def similar_batch(request: Request, body: SimilarRequest):
        k = body.k or cfg.k
        limits.check_ids(body.ids, cfg)
        limits.check_neighbors(len(body.ids), k, cfg)
        served = snapshot(request)
        limits.check_response_size(limits.neighbors_bytes(body.ids, k, served.max_id_length), cfg)
        result, source = await _top_k(served, body.ids, k, body.metric, body.exclude_self,
                                      cfg.request_timeout_s)
        return _json({"ids": result.query_ids.tolist(), "k": k,
                      "metric": body.metric or served.index.metric, "source": source,
                      "neighbors": _neighbors(result), "n_unknown": result.n_unknown})

    @app.post("/admin/reload")
    def admin_reload(request: Request):
        _authorize(request, cfg)
        return _reload(request, follower)

    return app


async def _top_k(served: ServedVersion, ids: list[str], k: int, metric: str | None, exclude_self: bool,
                 timeout_s: float, batcher: MicroBatcher | None = None,
                 unknown_ids: str | None = None) -> tuple[TopKResult, str]:
    """The top k of ``ids`` and where it came from: ``precomputed`` (the version's neighbours
    table, where it can answer) or ``exact`` (micro-batched when ``batcher`` is given, for
    one id), within ``timeout_s``."""
    result = served.neighbors and served.neighbors.answer(served.index, ids, k, metric, exclude_self)
    if result:
        return result, "precomputed"
    if batcher is not None:
        pending = asyncio.wrap_future(batcher.submit(served, ids[0], k, metric, exclude_self))
    else:
        pending = run_in_threadpool(served.index.topk, ids, k=k, metric=metric, exclude_self=exclude_self,
                                    unknown_ids=unknown_ids)
    return await _within(pending, timeout_s), "exact"


async def _within(pending, timeout_s: float):
    """The answer of ``pending`` (an awaitable), or 503 when it is not ready in ``timeout_s``
    (the wait is cancelled: a micro-batch skips or drops a cancelled request)."""
    try:
        return await asyncio.wait_for(pending, timeout_s)
    except asyncio.TimeoutError:
        raise HTTPException(503, f"no answer within serve.request_timeout_s={timeout_s:g} s; try again",
                            headers={"Retry-After": "1"}) from None


def _health(follower: VersionFollower, served: ServedVersion, batcher: MicroBatcher | None) -> dict:
    """/health: the follower's status (``ok`` or ``degraded``), the served index, the process."""
    index, neighbors = served.index, served.neighbors
    return {**follower.status(), "rows": len(index), "dim": index.dim,
            "dtype": index.dtype, "metric": index.metric, "backend": index.backend.name,
            "device": index.backend.device, "unknown_ids": index.unknown_ids,
            "pid": os.getpid(), "micro_batches": batcher and batcher.stats(),
            "precomputed": neighbors and {"k": neighbors.k, "metric": neighbors.metric}}


def _reload(request: Request, follower: VersionFollower) -> JSONResponse:
    """POST /admin/reload: 200 with the outcome, 409 when it failed or there is nothing to reload."""
    try:
        outcome = follower.request_reload_everywhere()
    except ManifestError as exc:
        return JSONResponse(status_code=409, content={"detail": str(exc)})
    request.state.version = outcome["version"]
    return JSONResponse(status_code=409 if outcome["error"] else 200, content=outcome)


def _authorize(request: Request, cfg: ServeConfig) -> None:
    """Loopback clients only, unless serve.admin_token is set (then a bearer token, any client)."""
    if cfg.admin_token:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {cfg.admin_token}".encode()):
            raise HTTPException(403, "admin endpoints need 'Authorization: Bearer <serve.admin_token>'")
    elif request.client is None or request.client.host not in LOOPBACK:
        raise HTTPException(403, "admin endpoints answer loopback clients only "
                                 "(set serve.admin_token to allow others)")


def _json(payload: dict) -> Response:
    """Compact JSON without FastAPI's per-element encoder (lists of floats are large)."""
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


def _neighbors(result: TopKResult) -> list[list[dict]]:
    """[[{"id", "score"}, ...] per query], best first."""
    return [[{"id": i, "score": s} for i, s in zip(ids, row)]
            for ids, row in zip(result.ids.tolist(), result.scores.tolist())]


async def _unknown_ids(request: Request, exc: UnknownIdError) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc), "unknown": exc.unknown[:100]})


async def _bad_request(request: Request, exc: ServingError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": str(exc)})
