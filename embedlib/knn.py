"""The one exact nearest-neighbour routine: top-k by inner product over memory-bounded
chunks, for NumPy and CuPy alike. The lookup index (embedlib/serving), the neighbours job,
evaluation and the churn metric all use it, so they rank and break ties the same way.
A search split over blocks of rows (the churn metric's pass over Arrow batches) runs
``block_candidates`` per block and ``merge_candidates`` over the blocks' results; ties
then go to the lower id, the one order every block agrees on.

Scores of a block of queries against a chunk of index rows come from one matmul. The
first chunk sets a threshold per query (its k-th best score, from a partition); after
that only scores strictly above the running k-th best are candidates: a row-max pass over
the chunk finds the queries that have any, and only their rows are compared in full, so
the selection work after the first chunk is about one pass over the scores plus a tiny
merge.

Ties are broken by row index (lower first), which makes results independent of the chunk
size: the merge puts the running best (all from earlier rows, already in order) before the
new candidates (in row order) and sorts by score with a stable sort.
"""
from __future__ import annotations

import numpy as np

# The first chunk only sets each query's threshold; a small one keeps its partition cheap,
# and the next chunk then brings about k * step / FIRST_CHUNK_ROWS candidates per query.
FIRST_CHUNK_ROWS = 4096


def nearest_neighbors(vectors: np.ndarray, rows: np.ndarray, k: int, batch: int = 1024) -> np.ndarray:
    """Indices of the ``k`` nearest rows by cosine to each of ``rows``, itself excluded.

    Parameters
    ----------
    vectors : ndarray, shape (n, e), float
        Scored as float32 unit rows.
    rows : ndarray of int, shape (q,)
    k : int
        At most n - 1 neighbours are returned.
    batch : int
        Queries scored together.

    Returns
    -------
    ndarray of int64, shape (q, min(k, n - 1))
        Nearest first; ties by row index (lower first).
    """
    unit = unit_rows(np, np.asarray(vectors))
    rows = np.asarray(rows, dtype=np.int64)
    k = min(k, len(unit) - 1)
    return exact_topk(np, unit[rows], unit, k, exclude_rows=rows, query_batch=batch)[1]


def shared_share(a, b) -> np.ndarray:
    """Per query, the share of its neighbours in ``a`` that are also in ``b`` (order ignored).

    Parameters
    ----------
    a, b : sequence of q sequences of neighbour ids or rows
        The same queries, row for row (e.g. two versions' ``nearest_neighbors``); a query
        whose ``a`` row is empty counts 0.

    Returns
    -------
    ndarray, shape (q,), float64, in [0, 1]
    """
    return np.array([len(set(x) & set(y)) / len(x) if len(x) else 0.0 for x, y in zip(a, b)],
                    dtype=np.float64).reshape(-1)


def block_candidates(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int,
                     exclude_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of one block of rows (e.g. an Arrow batch) by cosine, for each query, by id.

    What a distributed search runs per block; ``merge_candidates`` combines the blocks'
    results into the k nearest of all rows (the same ranking as ``nearest_neighbors`` up
    to ties, which go to the lower id instead of the lower row).

    Parameters
    ----------
    queries : ndarray, shape (q, e), float32
        Unit rows (``unit_rows``).
    vectors : ndarray, shape (n, e), float
        The block's rows; scored as float32 unit rows.
    ids : ndarray, shape (n,)
        Their ids.
    k : int
        >= 1.
    exclude_rows : ndarray of int, shape (q,), optional
        A row never returned for each query (its own row in the block), -1 for none.

    Returns
    -------
    scores : ndarray, shape (q, k), float32
        Best first; -inf where the block has fewer than k allowed rows.
    ids : ndarray of object, shape (q, k)
        Their ids; None where the score is -inf.
    """
    n = vectors.shape[0]
    scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    found = np.full((queries.shape[0], k), None, dtype=object)
    if n == 0 or queries.shape[0] == 0:
        return scores, found
    kb = min(k, n)
    s, rows = exact_topk(np, queries, unit_rows(np, np.asarray(vectors)), kb,
                         exclude_rows=None if exclude_rows is None else np.asarray(exclude_rows, dtype=np.int64))
    scores[:, :kb] = s
    hit = rows >= 0
    found[:, :kb][hit] = np.asarray(ids, dtype=object)[rows[hit]]
    scores[:, :kb][~hit] = -np.inf
    return scores, found


def merge_candidates(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best candidates along the last axis: score descending, then id ascending.

    Parameters
    ----------
    scores : ndarray, shape (..., m), float
        -inf marks an empty slot.
    ids : ndarray of object, shape (..., m)
        Unique within a row (ids of distinct rows); None in empty slots.
    k : int

    Returns
    -------
    scores : ndarray, shape (..., k), float32
        Padded with -inf when m < k.
    ids : ndarray of object, shape (..., k)
        None where the score is -inf.
    """
    scores = np.asarray(scores, dtype=np.float32)
    ids = np.asarray(ids, dtype=object)
    lead, m = scores.shape[:-1], scores.shape[-1]
    if m < k:
        pad = lead + (k - m,)
        scores = np.concatenate([scores, np.full(pad, -np.inf, dtype=np.float32)], axis=-1)
        ids = np.concatenate([ids, np.full(pad, None, dtype=object)], axis=-1)
    keys = np.where(np.equal(ids, None), "", ids)  # empty slots sort last anyway (-inf)
    order = np.lexsort((keys, -scores), axis=-1)[..., :k]
    best_scores = np.take_along_axis(scores, order, axis=-1)
    best_ids = np.take_along_axis(ids, order, axis=-1)
    best_ids[best_scores == -np.inf] = None
    return best_scores, best_ids


def chunk_rows(max_chunk_bytes: int, query_rows: int, n_rows: int) -> int:
    """Index rows per chunk so that one (query_rows, chunk) float32 block fits the bound.

    Parameters
    ----------
    max_chunk_bytes : int
    query_rows : int
    n_rows : int
        Rows of the index.

    Returns
    -------
    int, in [1, max(n_rows, 1)]
    """
    return int(max(1, min(n_rows, max_chunk_bytes // (4 * max(query_rows, 1)))))


def exact_topk(xp, queries, matrix, k: int, *, inv_norms=None, exclude_rows=None,
               max_chunk_bytes: int = 8 * 2**20, query_batch: int = 1024):
    """The k best rows of ``matrix`` for each query, by inner product.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``; every array below belongs to it.
    queries : ndarray, shape (b, e), float32
    matrix : ndarray, shape (n, e), float32 or float16
        Index rows; float16 chunks are cast to float32 before the matmul.
    k : int
        1 <= k <= n (checked by the caller).
    inv_norms : ndarray, shape (n,), float32, optional
        Scores are multiplied by these (cosine with unit-norm queries).
    exclude_rows : ndarray, shape (b,), int64, optional
        A row never returned for each query (its own row), -1 for none.
    max_chunk_bytes : int
        Bound on one (query block, index chunk) float32 score block (the first chunk is
        smaller: FIRST_CHUNK_ROWS rows, or 4 k).
    query_batch : int
        Queries scored together.

    Returns
    -------
    scores : ndarray, shape (b, k), float32
        Best first; ties in index-row order.
    rows : ndarray, shape (b, k), int64
        Rows of ``matrix``; -1 (score -inf) where fewer than k rows were allowed.
    """
    b = queries.shape[0]
    scores = xp.empty((b, k), dtype=xp.float32)
    rows = xp.empty((b, k), dtype=xp.int64)
    for lo in range(0, b, query_batch):
        hi = min(b, lo + query_batch)
        excl = None if exclude_rows is None else exclude_rows[lo:hi]
        scores[lo:hi], rows[lo:hi] = _topk_block(
            xp, queries[lo:hi], matrix, k, inv_norms, excl,
            chunk_rows(max_chunk_bytes, hi - lo, matrix.shape[0]))
    return scores, rows


def _topk_block(xp, queries, matrix, k, inv_norms, exclude_rows, step):
    """``exact_topk`` for one block of queries, walking the index ``step`` rows at a time."""
    b, n = queries.shape[0], matrix.shape[0]
    best_scores = xp.full((b, k), -np.inf, dtype=xp.float32)
    best_rows = xp.full((b, k), -1, dtype=xp.int64)
    for start, stop in _chunk_bounds(n, min(step, max(FIRST_CHUNK_ROWS, 4 * k)), step):
        block = _chunk_scores(xp, queries, matrix, start, stop, inv_norms, exclude_rows)
        if start == 0:
            flat = xp.flatnonzero((block >= _kth_largest(xp, block, k)) & (block > -np.inf))
        else:
            flat = _above(xp, block, best_scores[:, k - 1])
        if flat.size:
            best_scores, best_rows = _merge(xp, best_scores, best_rows, block, flat, start)
    return best_scores, best_rows


def _above(xp, block, threshold):
    """Flat indices into ``block`` of the scores strictly above their row's ``threshold``.

    Once the running k-th best is high, most rows of a chunk hold no candidate: a row-max
    pass (cheap, contiguous) finds the rows that do, and only those are compared in full.
    """
    hot = xp.flatnonzero(block.max(axis=1) > threshold)
    if hot.size == 0:
        return hot
    width = block.shape[1]
    sub = xp.flatnonzero(block[hot] > threshold[hot, None])
    return hot[sub // width] * width + sub % width


def _chunk_bounds(n: int, first: int, step: int):
    """(start, stop) of each chunk: rows [0, first), then ``step`` rows at a time."""
    yield 0, min(n, first)
    for start in range(first, n, step):
        yield start, min(n, start + step)


def _chunk_scores(xp, queries, matrix, start, stop, inv_norms, exclude_rows):
    """Scores of ``queries`` against rows [start, stop): shape (b, stop - start), float32."""
    chunk = matrix[start:stop]
    if chunk.dtype != xp.float32:
        chunk = chunk.astype(xp.float32)
    block = xp.matmul(queries, chunk.T)
    if inv_norms is not None:
        block *= inv_norms[start:stop]
    if exclude_rows is not None:
        local = exclude_rows - start
        hit = xp.flatnonzero((local >= 0) & (local < stop - start))
        block[hit, local[hit]] = -np.inf
    return block


def _kth_largest(xp, block, k):
    """The k-th largest score of each row, shape (b, 1); -inf where a row has fewer."""
    width = block.shape[1]
    if width < k:
        return xp.full((block.shape[0], 1), -np.inf, dtype=block.dtype)
    return xp.partition(block, width - k, axis=1)[:, width - k:width - k + 1]


def _merge(xp, best_scores, best_rows, block, flat, start):
    """Merge the candidates ``flat`` (flat indices into ``block``) into the running best.

    Returns
    -------
    scores, rows : ndarray, shape (b, k)
        The k best of (running best, candidates), score descending, row ascending.
    """
    b, k = best_scores.shape
    width = block.shape[1]
    query = flat // width
    counts = xp.bincount(query, minlength=b)
    slot = xp.arange(flat.size) - (xp.cumsum(counts) - counts)[query] + k
    pad = k + int(counts.max())
    pad_scores = xp.full((b, pad), -np.inf, dtype=xp.float32)
    pad_rows = xp.full((b, pad), -1, dtype=xp.int64)
    pad_scores[:, :k] = best_scores
    pad_rows[:, :k] = best_rows
    pad_scores[query, slot] = block.ravel()[flat]
    pad_rows[query, slot] = flat % width + start
    # Stable: among equal scores the earlier slot, i.e. the lower row, comes first.
    order = _stable_argsort(xp, -pad_scores)[:, :k]
    return (xp.take_along_axis(pad_scores, order, axis=1),
            xp.take_along_axis(pad_rows, order, axis=1))


def _stable_argsort(xp, a):
    """Ascending, stable argsort along axis 1 (CuPy's argsort is always stable)."""
    if xp is np:
        return np.argsort(a, axis=1, kind="stable")
    return xp.argsort(a, axis=1)


def row_inv_norms(xp, matrix, step: int = 65536):
    """1 / L2 norm of each row of ``matrix`` (0 for a zero row), float32, shape (n,).

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``; ``matrix`` belongs to it.
    matrix : ndarray, shape (n, e), float32 or float16
    step : int
        Rows per pass (bounds the float32 temporary).

    Returns
    -------
    ndarray, shape (n,), float32
    """
    n = matrix.shape[0]
    out = xp.empty(n, dtype=xp.float32)
    for start in range(0, n, step):
        chunk = matrix[start:start + step].astype(xp.float32)
        norms = xp.sqrt((chunk * chunk).sum(axis=1))
        out[start:start + step] = xp.where(norms > 0, 1.0 / xp.where(norms > 0, norms, 1.0), 0.0)
    return out


def unit_rows(xp, vectors):
    """``vectors`` scaled to unit L2 norm per row (zero rows stay zero), float32.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``; ``vectors`` belongs to it.
    vectors : ndarray, shape (n, e), float

    Returns
    -------
    ndarray, shape (n, e), float32
        A new array.
    """
    vectors = vectors.astype(xp.float32, copy=False)
    inv = row_inv_norms(xp, vectors)
    return vectors * inv[:, None]

