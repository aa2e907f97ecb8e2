"""Precomputed neighbours: the served version's ``neighbors`` partition, answered by lookup.

``jobs/build_neighbors.py`` (step 5) computes each item's top K with the exact search of the
service (``EmbeddingIndex.topk``, exclude_self) and registers the partition in the version's
manifest. The service loads it with the vectors, as index rows (an (n, K) int32 matrix, and
the scores as an (n, K) float32 one), so a request for a known id with k <= K, the table's
metric and exclude_self is a row lookup instead of a pass over the whole index. Anything
else goes to the exact search.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedlib import locations
from embedlib.serving.index import EmbeddingIndex, TopKResult
from embedlib.serving.vectors import VectorsError


@dataclass(frozen=True)
class PrecomputedNeighbors:
    """rows : ndarray, shape (n, K), int32: the index rows of each index row's neighbours,
    best first (-1 for an index row the table does not hold); scores : (n, K) float32."""

    rows: np.ndarray
    scores: np.ndarray
    k: int
    metric: str

    @classmethod
    def load(cls, info: dict, index: EmbeddingIndex) -> PrecomputedNeighbors:
        """The neighbours table ``info`` (``Manifest.neighbors``) as rows of ``index``."""
        located = locations.filesystem(locations.absolute(info["location"]))
        if located is None:
            raise VectorsError(f"pyarrow cannot open the neighbours at {info['location']}")
        table = pq.read_table(located[1], filesystem=located[0], columns=["item_id", "neighbors"])
        k, lists = int(info["k"]), table.column("neighbors").combine_chunks()
        where = f"the neighbours at {info['location']}"
        if table.num_rows != int(info["n_rows"]):
            raise VectorsError(f"{where} hold {table.num_rows} rows, the manifest recorded {info['n_rows']}")
        if lists.null_count or (pc.list_value_length(lists).to_numpy(zero_copy_only=False) != k).any():
            raise VectorsError(f"{where}: every item must have {k} neighbours")
        flat = lists.flatten()
        items = index.rows_of(table.column("item_id").to_numpy(zero_copy_only=False))
        found = index.rows_of(flat.field("id").to_numpy(zero_copy_only=False)).reshape(-1, k)
        if (items < 0).any() or (found < 0).any():
            raise VectorsError(f"{where} name ids that the version's vectors do not hold")
        rows = np.full((len(index), k), -1, dtype=np.int32)
        scores = np.zeros((len(index), k), dtype=np.float32)
        rows[items] = found
        scores[items] = flat.field("score").to_numpy(zero_copy_only=False).reshape(-1, k)
        return cls(rows, scores, k, info["metric"])

    def answer(self, index: EmbeddingIndex, ids, k: int, metric: str | None,
               exclude_self: bool) -> TopKResult | None:
        """The top ``k`` of ``ids`` from the table, or None where it cannot answer (an
        unknown id, k > K, another metric, exclude_self false): the exact search does."""
        if not exclude_self or k > self.k or (metric or index.metric) != self.metric:
            return None
        query = np.asarray(ids, dtype=object)
        rows = index.rows_of(query)
        if (rows < 0).any() or (self.rows[rows, 0] < 0).any():
            return None
        neighbours = self.rows[rows, :k]
        return TopKResult(query, index.ids[neighbours], self.scores[rows, :k], neighbours, 0)
