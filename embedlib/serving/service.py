"""HTTP lookups over an EmbeddingIndex (FastAPI): vectors and similar items, one or batched.

Unknown ids answer 404 with the ids named; bad parameters (k out of range, unknown metric,
empty id lists) answer 422. Endpoints are plain ``def`` functions, so FastAPI runs them in
its thread pool and a long top-k does not block the event loop.
"""
from __future__ import annotations

from typing import Literal, Optional

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from embedlib import __version__
from embedlib.config import ServeConfig
from embedlib.serving.index import EmbeddingIndex, ServingError, TopKResult, UnknownIdError

# Ids per batch request; larger batches should go through the neighbours job.
MAX_IDS = 10_000

Metric = Literal["cosine", "dot"]


class VectorsRequest(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=MAX_IDS)


class SimilarRequest(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=MAX_IDS)
    k: Optional[int] = Field(default=None, ge=1)
    metric: Optional[Metric] = None
    exclude_self: bool = True


def create_app(index: EmbeddingIndex, cfg: Optional[ServeConfig] = None,
               version: Optional[str] = None) -> FastAPI:
    """The lookup service over ``index``; ``version`` (e.g. the dt) is shown by /health."""
    cfg = cfg or ServeConfig()
    app = FastAPI(title="embedlib lookup", version=__version__)
    app.add_exception_handler(UnknownIdError, _unknown_ids)
    app.add_exception_handler(ServingError, _bad_request)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "version": version, "rows": len(index), "dim": index.dim,
                "dtype": index.dtype, "metric": index.metric, "backend": index.backend.name,
                "device": index.backend.device, "unknown_ids": index.unknown_ids}

    @app.get("/vector")
    def vector(id: str = Query(min_length=1, description="an id of the index")) -> dict:
        found = index.lookup([id], unknown_ids="error")
        return {"id": id, "vector": found.vectors[0].tolist()}

    @app.post("/vectors")
    def vectors(body: VectorsRequest) -> dict:
        found = index.lookup(body.ids)
        return {"ids": found.ids.tolist(), "vectors": found.vectors.tolist(),
                "found": found.found.tolist(), "n_unknown": found.n_unknown}

    @app.get("/similar")
    def similar(id: str = Query(min_length=1, description="an id of the index"),
                k: int = Query(cfg.k, ge=1, le=cfg.max_k),
                metric: Optional[Metric] = None, exclude_self: bool = True) -> dict:
        result = index.topk([id], k=k, metric=metric, exclude_self=exclude_self,
                            unknown_ids="error")
        return {"id": id, "k": k, "metric": metric or index.metric,
                "neighbors": _neighbors(result)[0]}

    @app.post("/similar")
    def similar_batch(body: SimilarRequest) -> dict:
        k = body.k or cfg.k
        if k > cfg.max_k:
            raise ServingError(f"k must be <= {cfg.max_k}, got {k}")
        result = index.topk(body.ids, k=k, metric=body.metric, exclude_self=body.exclude_self)
        return {"ids": result.query_ids.tolist(), "k": k, "metric": body.metric or index.metric,
                "neighbors": _neighbors(result), "n_unknown": result.n_unknown}

    return app


def _neighbors(result: TopKResult) -> list[list[dict]]:
    """[[{"id", "score"}, ...] per query], best first."""
    return [[{"id": i, "score": s} for i, s in zip(ids, row)]
            for ids, row in zip(result.ids.tolist(), result.scores.tolist())]


async def _unknown_ids(request: Request, exc: UnknownIdError) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc), "unknown": exc.unknown[:100]})


async def _bad_request(request: Request, exc: ServingError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": str(exc)})
