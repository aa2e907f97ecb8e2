"""An embedding index in device memory: vector lookups and exact top-k neighbours.

The matrix lives on the GPU (CuPy) when there is one, else in host memory (NumPy); the
id -> row map is built once on the host. Lookups and top-k run the same code on both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedlib import knn as _topk
from embedlib.config import METRICS, ServeConfig, check_choice
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger
from embedlib.serving.backend import Backend, select_backend
from embedlib.serving.vectors import check_vectors, read_embeddings

log = get_logger(__name__)

POLICIES = ("error", "zero", "skip")
DTYPES = ("float32", "float16")
# Score block bound when max_chunk_bytes is 0, per backend (see ServeConfig).
AUTO_CHUNK_BYTES = {"numpy": 8 * 2**20, "cupy": 2**30}


class ServingError(EmbedlibError):
    """A bad request to the index: bad k, metric, policy or query vectors."""


class UnknownIdError(ServingError):
    """Ids that are not in the index, under the "error" policy; ``unknown`` lists them."""

    def __init__(self, unknown: Sequence[str]):
        self.unknown = list(unknown)
        shown = ", ".join(repr(u) for u in self.unknown[:5])
        more = f" and {len(self.unknown) - 5} more" if len(self.unknown) > 5 else ""
        super().__init__(f"{len(self.unknown)} unknown id(s): {shown}{more}")


@dataclass
class LookupResult:
    """Vectors for the ids asked for.

    Attributes
    ----------
    ids : ndarray, shape (m,), object (str)
        The ids returned (unknown ones left out under "skip").
    vectors : ndarray, shape (m, e), float32
        Zero rows for unknown ids under "zero".
    found : ndarray, shape (m,), bool
    n_unknown : int
        Unknown ids among those asked for, whatever the policy.
    """

    ids: np.ndarray
    vectors: np.ndarray
    found: np.ndarray
    n_unknown: int


@dataclass
class TopKResult:
    """The k best index rows per query.

    Attributes
    ----------
    query_ids : ndarray, shape (b,), object (str), or None
        None for vector queries.
    ids : ndarray, shape (b, k), object (str)
        Neighbour ids, best first.
    scores : ndarray, shape (b, k), float32
    rows : ndarray, shape (b, k), int64
        Index rows of the neighbours.
    n_unknown : int
        Unknown query ids, whatever the policy (0 for vector queries).
    """

    query_ids: np.ndarray | None
    ids: np.ndarray
    scores: np.ndarray
    rows: np.ndarray
    n_unknown: int


class EmbeddingIndex:
    """Published vectors on a device with an id -> row map.

    Parameters
    ----------
    ids : array-like of str, shape (n,)
        Unique ids.
    vectors : ndarray, shape (n, e)
        Finite values; stored as ``dtype`` on the backend's device.
    backend : {"auto", "numpy", "cupy"} or Backend
    dtype : {"float32", "float16"}
    metric : {"cosine", "dot"}
        Default metric of ``topk``.
    unknown_ids : {"error", "zero", "skip"}
        Default policy for ids that are not in the index.
    max_chunk_bytes, query_batch : int
        Memory bound of one score block (0: by backend, AUTO_CHUNK_BYTES) and queries
        scored together (see ``knn.exact_topk``).

    Attributes
    ----------
    ids : ndarray, shape (n,), object (str)
    matrix : ndarray, shape (n, e), ``dtype``, of the backend (NumPy or CuPy)
    inv_norms : ndarray, shape (n,), float32, of the backend
        1 / L2 norm of each row (0 for a zero row).
    backend : Backend

    Raises
    ------
    ServingError
        An unknown dtype, metric or unknown_ids policy; vectors that overflow float16.
    VectorsError
        Ids not unique, or ``vectors`` not a finite (n, e) matrix with n, e > 0.
    BackendError
        The backend cannot be used here (see ``select_backend``).
    """

    def __init__(self, ids, vectors: np.ndarray, *, backend: str | Backend = "auto",
                 dtype: str = "float32", metric: str = "cosine", unknown_ids: str = "error",
                 max_chunk_bytes: int = 0, query_batch: int = 1024):
        ids = np.asarray(ids, dtype=object)
        vectors = np.asarray(vectors)
        check_choice("dtype", dtype, DTYPES, ServingError)
        check_choice("metric", metric, METRICS, ServingError)
        check_choice("unknown_ids", unknown_ids, POLICIES, ServingError)
        check_vectors(ids, vectors)
        with np.errstate(over="ignore"):  # overflow is reported just below
            stored = vectors.astype(dtype, copy=False)
        if dtype == "float16" and not np.isfinite(stored).all():
            raise ServingError("vectors overflow float16 (|value| > 65504); use dtype float32")
        self.backend = backend if isinstance(backend, Backend) else select_backend(backend)
        self.ids = ids
        self.dtype, self.metric, self.unknown_ids = dtype, metric, unknown_ids
        self.max_chunk_bytes = max_chunk_bytes or AUTO_CHUNK_BYTES[self.backend.name]
        self.query_batch = query_batch
        self._rows = pd.Index(ids)
        xp = self.backend.xp
        self.matrix = self.backend.to_device(stored)
        self.inv_norms = _topk.row_inv_norms(xp, self.matrix)
        log.info("index: %d x %d %s on %s %s (%.1f MiB)", len(ids), self.dim, dtype,
                 self.backend.name, self.backend.device, self.nbytes / 2**20)

    @classmethod
    def from_parquet(cls, path: str | Path | Sequence[str], **options) -> EmbeddingIndex:
        """Load a published version (Parquet file, folder or file list) with pyarrow.

        Parameters
        ----------
        path : str, Path or sequence of str
            Parquet with columns id string, vector array<float> of one length (others
            ignored); paths or URIs.
        **options
            Keyword arguments of EmbeddingIndex (e.g. ``index_options(cfg)``).

        Returns
        -------
        EmbeddingIndex

        Raises
        ------
        VectorsError
            Unreadable or missing files, a folder with several run= folders, missing
            columns, or bad rows (the message names the first).
        ServingError, BackendError
            As EmbeddingIndex.
        """
        ids, vectors = read_embeddings(path)
        return cls(ids, vectors, **options)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """Vector length e."""
        return int(self.matrix.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes of the matrix and its inverse norms on the device."""
        return int(self.matrix.nbytes + self.inv_norms.nbytes)

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Index rows of ``ids``, shape (m,), int64; -1 for unknown ids.

        Parameters
        ----------
        ids : sequence of str, shape (m,)

        Returns
        -------
        ndarray, shape (m,), int64
        """
        if len(ids) == 1:  # one id (GET /similar, /vector): a hash lookup, no Index to build
            try:
                row = self._rows.get_loc(ids[0])
            except (KeyError, TypeError):
                return np.array([-1], dtype=np.int64)
            if isinstance(row, (int, np.integer)):
                return np.array([row], dtype=np.int64)
        return self._rows.get_indexer(pd.Index(np.asarray(ids, dtype=object))).astype(np.int64)

    def lookup(self, ids: Sequence[str], unknown_ids: str | None = None) -> LookupResult:
        """Vectors for ``ids`` (float32 on the host), unknown ids per the policy.

        Parameters
        ----------
        ids : str or sequence of str, shape (m,)
        unknown_ids : {"error", "zero", "skip"}, default the index's

        Returns
        -------
        LookupResult

        Raises
        ------
        UnknownIdError
            Unknown ids under "error".
        ServingError
            An unknown policy.
        """
        ids, rows, found, n_unknown = self._resolve(_as_id_array(ids), unknown_ids)
        vectors = self.backend.to_host(self._gather(rows, found))
        return LookupResult(ids, vectors, found, n_unknown)

    def topk(self, queries, k: int | None = None, metric: str | None = None,
             exclude_self: bool = False, unknown_ids: str | None = None) -> TopKResult:
        """The k nearest index rows of each query, exact, best first (ties: lower row).

        Parameters
        ----------
        queries : str or sequence of str, shape (b,), or ndarray, shape (b, e), float
            Ids of the index, or query vectors (NumPy or, on the GPU, CuPy).
        k : int, default 10
            1 <= k <= n (n - 1 with ``exclude_self``).
        metric : {"cosine", "dot"}, default the index's
        exclude_self : bool
            Leave each id query's own row out of its results (id queries only).
        unknown_ids : {"error", "zero", "skip"}, default the index's
            Under "zero" an unknown id is queried as a zero vector (every score 0).

        Returns
        -------
        TopKResult

        Raises
        ------
        ServingError
            A bad k, metric or policy; query vectors not of shape (b, e) or not finite;
            ``exclude_self`` with vector queries.
        UnknownIdError
            Unknown query ids under "error".
        """
        metric = metric or self.metric
        check_choice("metric", metric, METRICS, ServingError)
        if _is_vector_batch(queries):
            if exclude_self:
                raise ServingError("exclude_self needs id queries, not vectors")
            query_ids, n_unknown, exclude = None, 0, None
            vectors = self._query_vectors(queries)
        else:
            query_ids, rows, found, n_unknown = self._resolve(_as_id_array(queries), unknown_ids)
            vectors = self._gather(rows, found)
            exclude = np.where(found, rows, -1) if exclude_self else None
        k = self._check_k(10 if k is None else k, exclude_self)
        xp = self.backend.xp
        if metric == "cosine":
            vectors = _topk.unit_rows(xp, vectors)
        scores, rows = _topk.exact_topk(
            xp, vectors, self.matrix, k,
            inv_norms=self.inv_norms if metric == "cosine" else None,
            exclude_rows=None if exclude is None else self.backend.to_device(exclude),
            max_chunk_bytes=self.max_chunk_bytes, query_batch=self.query_batch)
        rows = self.backend.to_host(rows)
        return TopKResult(query_ids, self.ids[rows], self.backend.to_host(scores), rows, n_unknown)

    def _resolve(self, ids: np.ndarray, policy: str | None):
        """(ids kept, their rows, found mask, number unknown) under ``policy``."""
        policy = policy or self.unknown_ids
        check_choice("unknown_ids", policy, POLICIES, ServingError)
        rows = self.rows_of(ids)
        found = rows >= 0
        n_unknown = int(len(found) - found.sum())
        if n_unknown and policy == "error":
            raise UnknownIdError(ids[~found])
        if n_unknown and policy == "skip":
            return ids[found], rows[found], found[found], n_unknown
        return ids, rows, found, n_unknown

    def _gather(self, rows: np.ndarray, found: np.ndarray):
        """Float32 device rows for ``rows``, zero where not ``found``: shape (m, e)."""
        xp = self.backend.xp
        safe_rows = self.backend.to_device(np.where(found, rows, 0))
        vectors = self.matrix[safe_rows].astype(xp.float32, copy=False)
        if not found.all():
            vectors *= self.backend.to_device(found[:, None].astype(np.float32))
        return vectors

    def _query_vectors(self, vectors):
        xp = self.backend.xp
        vectors = self.backend.to_device(vectors, dtype=xp.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ServingError(f"query vectors must have shape (b, {self.dim}), "
                               f"got {tuple(vectors.shape)}")
        if not bool(xp.isfinite(vectors).all()):
            raise ServingError("query vectors have NaN or Inf values")
        return vectors

    def _check_k(self, k: int, exclude_self: bool) -> int:
        allowed = len(self) - (1 if exclude_self else 0)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= allowed:
            raise ServingError(f"k must be an integer in [1, {allowed}] "
                               f"({len(self)} rows{', self excluded' if exclude_self else ''}); "
                               f"got {k!r}")
        return int(k)


def index_options(cfg: ServeConfig) -> dict:
    """EmbeddingIndex keyword arguments from the ``serve`` config section.

    Parameters
    ----------
    cfg : ServeConfig

    Returns
    -------
    dict
        backend, dtype, metric, unknown_ids, max_chunk_bytes, query_batch.
    """
    return {"backend": cfg.backend, "dtype": cfg.dtype, "metric": cfg.metric,
            "unknown_ids": cfg.unknown_ids, "max_chunk_bytes": cfg.max_chunk_bytes,
            "query_batch": cfg.query_batch}


def _as_id_array(ids) -> np.ndarray:
    if isinstance(ids, str):
        ids = [ids]
    return np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=object)


def _is_vector_batch(queries) -> bool:
    dtype = getattr(queries, "dtype", None)
    return dtype is not None and getattr(dtype, "kind", "O") in "fiu" and queries.ndim == 2
