"""Micro-batching: concurrent single-id top-k requests scored together in one matmul.

One top-k call per request spends most of its time streaming the whole index through the
matmul for a single query row; b queries in one call stream it once. A worker thread takes
the first waiting request, gathers those that arrive within ``wait_s`` (at most
``max_batch``), and answers each with its own slice of one ``EmbeddingIndex.topk``. Requests
are grouped by the version they captured at arrival (and by metric and exclude_self), so a
hot swap never mixes versions in one answer.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from embedlib.log import get_logger
from embedlib.serving.index import ServingError, TopKResult, UnknownIdError

log = get_logger(__name__)


@dataclass
class _Request:
    served: object  # follow.ServedVersion captured when the request arrived
    id: str
    k: int
    metric: str | None
    exclude_self: bool
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Gathers single-id top-k requests for up to ``wait_s`` seconds, ``max_batch`` at most.

    The worker thread cannot die of a request: every step of a batch runs inside one try, a
    future is settled only while it is not done (its waiter may have been cancelled, by a
    timeout or at shutdown), and ``submit`` restarts the thread, with an ERROR line, should it
    have ended anyway.
    """

    def __init__(self, wait_s: float, max_batch: int):
        self.wait_s, self.max_batch = wait_s, max_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = self.requests = self.restarts = 0

    def submit(self, served, id_: str, k: int, metric: str | None, exclude_self: bool) -> Future:
        """A Future of the request's TopKResult (one row), or of its UnknownIdError."""
        self._ensure_started()
        request = _Request(served, id_, k, metric, exclude_self)
        self._queue.put(request)
        return request.future

    def stats(self) -> dict:
        """Batches scored and requests answered so far (their ratio: the mean batch), and how
        often the worker thread had to be restarted."""
        return {"batches": self.batches, "requests": self.requests, "restarts": self.restarts}

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if self._thread is not None:
                self.restarts += 1
                log.error("the micro-batching thread had ended; restarted (%d restarts)", self.restarts)
            self._thread = threading.Thread(target=self._run, name="topk-batcher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            try:
                deadline = time.perf_counter() + self.wait_s
                while len(batch) < self.max_batch:
                    try:
                        batch.append(self._queue.get(timeout=max(deadline - time.perf_counter(), 0)))
                    except queue.Empty:
                        break
                groups: dict = {}
                for request in batch:
                    if not request.future.done():  # not cancelled while it waited
                        key = (id(request.served), request.metric, request.exclude_self)
                        groups.setdefault(key, []).append(request)
                for group in groups.values():
                    _answer_or_fail(group)
                self.batches += 1
                self.requests += len(batch)
            except Exception as exc:  # noqa: BLE001 - the thread lives on
                _fail(batch, exc)


def _answer_or_fail(group: list[_Request]) -> None:
    try:
        _answer(group)
    except Exception as exc:  # noqa: BLE001 - handed to every waiting request, not lost
        _fail(group, exc)


def _fail(requests: list[_Request], exc: Exception) -> None:
    if not isinstance(exc, ServingError):
        log.error("a micro-batch of %d requests failed: %r", len(requests), exc)
    for r in requests:
        _settle(r.future, exc=exc)


def _settle(future: Future, result=None, exc: BaseException | None = None) -> None:
    """Set ``future``'s result or exception unless it is already done (cancelled, or settled)."""
    try:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled between done() and the set
        pass


def _answer(group: list[_Request]) -> None:
    """One topk for the group's known ids at the largest k; each request gets its prefix
    (results are exact and ordered by score, then row, so top-k is a prefix of top-K)."""
    index = group[0].served.index
    rows = index.rows_of([r.id for r in group])
    allowed = len(index) - (1 if group[0].exclude_self else 0)
    known = [r for r, row in zip(group, rows) if row >= 0 and r.k <= allowed]
    for r, row in zip(group, rows):
        if row < 0:
            _settle(r.future, exc=UnknownIdError([r.id]))
        elif r.k > allowed:
            _settle(r.future, exc=ServingError(f"k must be <= {allowed} for this index, got {r.k}"))
    if not known:
        return
    result = index.topk([r.id for r in known], k=max(r.k for r in known),
                        metric=known[0].metric, exclude_self=known[0].exclude_self, unknown_ids="error")
    for j, r in enumerate(known):
        _settle(r.future, TopKResult(np.array([r.id], dtype=object), result.ids[j:j + 1, :r.k],
                                     result.scores[j:j + 1, :r.k], result.rows[j:j + 1, :r.k], 0))
