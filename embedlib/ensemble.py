"""Seed ensembles (``train.ensemble_size`` = k > 1): k models of one corpus, one frame, one mean.

Training noise (the seed, thread scheduling) reshuffles an item's nearest neighbours from
one version to the next even when the data does not change; the mean of k independently
seeded models has less of that noise. The members differ in their frame (word2vec is
defined up to an invertible map of its dimensions), so before the mean each member is:

1. canonicalized when it has a context side: T' = T M_T, W' = W M_W from the low-rank SVD
   of its own score matrix T W^T (``linalg.cholesky_factor``, ``linalg.low_rank_svd_transforms``),
   which keeps T W^T and removes the member's arbitrary invertible map up to a rotation;
2. rotated onto member 0 with orthogonal Procrustes over the shared vocabulary
   (``linalg.procrustes_rotation`` of T_j'^T T_0'), applied to both sides, so each member's
   item . context scores are kept exactly;
3. averaged: items with items, contexts with contexts.

This module holds that maths and the parallel runners (a process pool on one host, one
Spark task per member on a cluster); ``embedlib.item2vec`` trains the members.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embedlib import knn, linalg
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger

log = get_logger(__name__)

AGREEMENT_K = 10
AGREEMENT_QUERIES = 500
# What one gensim process costs before its vectors: the interpreter, numpy, gensim, scipy.
PROCESS_BASE_BYTES = 300 << 20


class EnsembleError(EmbedlibError):
    """An ensemble member failed, or the members do not share their vocabulary."""


@dataclass
class Member:
    """One trained member: rows follow ``keys`` (gensim's vocabulary order, url-encoded ids)."""

    seed: int
    keys: list[str]
    counts: np.ndarray
    item: np.ndarray  # (n, e) float32
    context: np.ndarray | None  # (n, e) float32
    seconds: float  # training wall seconds (no vocabulary scan)
    cpu_seconds: float  # the member process's CPU seconds while training
    host: str


@dataclass
class Averaged:
    """The ensemble: mean item (and context) vectors in member 0's canonical frame.

    ``transforms[j]`` = (A_j, B_j): member j's item rows times A_j and context rows times
    B_j are what was averaged (A_j = M_T O_j, B_j = M_W O_j; for item-only members A_j = O_j).
    """

    item: np.ndarray  # (n, e) float32
    context: np.ndarray | None
    transforms: list[tuple[np.ndarray, np.ndarray | None]]


def align_and_average(items: Sequence[np.ndarray], contexts: Sequence[np.ndarray] | None = None,
                      rcond: float = 1e-10) -> Averaged:
    """Put k members in one frame (canonicalize, rotate onto member 0) and average them.

    Parameters
    ----------
    items : k arrays, shape (n, e)
        The members' item vectors, row i of each for the same id.
    contexts : k arrays, shape (n, e), or None
        The context vectors, rows as ``items``; None for item-only members (no
        canonicalization then: each member is only rotated onto member 0).
    rcond : float
        Gram eigenvalue ratio below which the Cholesky factor falls back to eigh.

    Returns
    -------
    Averaged

    Raises
    ------
    linalg.LinalgError
        A member has NaN/Inf or zero vectors.
    """
    if not items:
        raise EnsembleError("an ensemble needs at least one member")
    shapes = {np.shape(x) for x in items} | {np.shape(w) for w in contexts or ()}
    if len(shapes) != 1:
        raise EnsembleError(f"ensemble members differ in shape: {sorted(shapes)}")
    framed = []
    for j, t in enumerate(items):
        t = np.asarray(t, dtype=np.float64)
        w = None if contexts is None else np.asarray(contexts[j], dtype=np.float64)
        a = b = np.eye(t.shape[1])
        if w is not None:
            canon = linalg.canonical_pair_transforms(t, w, rcond, (f"member {j} items", f"member {j} context"))
            a, b = canon.m_t, canon.m_w
        framed.append((t @ a, None if w is None else w @ b, a, b))
    reference = framed[0][0]
    item_sum = np.zeros_like(reference)
    context_sum = None if contexts is None else np.zeros_like(reference)
    transforms = []
    for t, w, a, b in framed:
        o = linalg.procrustes_rotation(t.T @ reference)
        item_sum += t @ o
        if w is not None:
            context_sum += w @ o
        transforms.append((a @ o, None if w is None else b @ o))
    k = len(items)
    return Averaged((item_sum / k).astype(np.float32),
                    None if context_sum is None else (context_sum / k).astype(np.float32),
                    transforms)


def agreement(items: Sequence[np.ndarray], k: int = AGREEMENT_K, n_queries: int = AGREEMENT_QUERIES,
              seed: int = 0) -> float | None:
    """Mean pairwise neighbour overlap@k between members (cosine, over all rows, self excluded).

    The queries are ``n_queries`` rows drawn with ``seed`` (the same for every pair); None
    with fewer than two members or no more rows than k.
    """
    n = items[0].shape[0] if items else 0
    if len(items) < 2 or n <= k:
        return None
    queries = np.sort(np.random.default_rng(seed).permutation(n)[:n_queries])
    neighbours = [knn.nearest_neighbors(np.asarray(x, dtype=np.float64), queries, k) for x in items]
    shares = [knn.shared_share(a, b).mean() for i, a in enumerate(neighbours) for b in neighbours[i + 1:]]
    return float(np.mean(shares))


# --------------------------------------------------------------------------------- runners
def member_bytes(vocab_size: int, dim: int) -> int:
    """A member process's memory: the interpreter and libraries, both sides and their copies."""
    return PROCESS_BASE_BYTES + vocab_size * (6 * dim * 4 + 400)


def driver_bytes(k: int, vocab_size: int, dim: int) -> tuple[int, int]:
    """(collected, peak) bytes of an ensemble on the driver: the k members' item and context
    float32 matrices that reach it, and the peak with the alignment's float64 copies (two per
    member: its canonical item and context sides) on top."""
    collected = k * vocab_size * dim * 4 * 2
    return collected, collected + 2 * k * vocab_size * dim * 8


def check_driver_memory(k: int, vocab_size: int, dim: int, max_result_bytes: int | None,
                        free_bytes: int | None) -> None:
    """Refuse, before any member trains, an ensemble whose members cannot all reach the driver:
    more than Spark's ``spark.driver.maxResultSize`` (``max_result_bytes``, None or 0:
    unlimited; the Spark runner) or than the memory available (``free_bytes``)."""
    collected, peak = driver_bytes(k, vocab_size, dim)
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    shape = (f"an ensemble of {k} members of {vocab_size} items x {dim} dims needs about "
             f"{gib(collected)} of member vectors on the driver ({gib(peak)} at its peak, with the "
             "alignment's float64 copies)")
    if max_result_bytes and collected > max_result_bytes:
        raise EnsembleError(f"{shape}, over spark.driver.maxResultSize ({gib(max_result_bytes)}): raise "
                            "spark.driver.maxResultSize (under spark.extra in the config) "
                            "and the driver's memory, or lower train.ensemble_size or train.vector_size")
    if free_bytes is not None and peak > free_bytes:
        raise EnsembleError(f"{shape}, over the {gib(free_bytes)} of memory available on this host: "
                            "lower train.ensemble_size or train.vector_size, or train on a larger driver")


def available_bytes() -> int | None:
    """Memory the OS can hand out now (MemAvailable), or None where it does not say."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def local_pool_size(k: int, workers: int, one_member_bytes: int, free_bytes: int | None = None,
                    cpus: int | None = None) -> int:
    """How many members train at once on this host: within the thread budget ``train.workers``,
    the cores and half of the memory available now; at least 1."""
    cpus = cpus or os.cpu_count() or 1
    by_memory = k if free_bytes is None else max(1, free_bytes // 2 // max(one_member_bytes, 1))
    return max(1, min(k, workers, cpus, by_memory))


def run_local(fn: Callable, jobs: Sequence[tuple], pool: int) -> list:
    """``fn(*job)`` for each job, ``pool`` at a time in fresh (spawned) processes, in job order.

    One process at a time runs in this process instead. Spawned, not forked: the driver
    holds a JVM gateway and threads that a fork would copy half-way.
    """
    if pool <= 1:
        return [fn(*job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(pool, mp_context=context) as executor:
        futures = [executor.submit(fn, *job) for job in jobs]
        return [_result(f, i) for i, f in enumerate(futures)]


def _result(future: concurrent.futures.Future, i: int):
    try:
        return future.result()
    except EmbedlibError:
        raise
    except concurrent.futures.process.BrokenProcessPool as exc:
        raise EnsembleError(
            f"the ensemble's member processes died before member {i} answered ({exc}). Members run "
            "in spawned processes, which import the main script again: a script that calls "
            "train_ensemble (or the pipeline) at import time starts it again in every member. Put "
            "those calls under `if __name__ == \"__main__\":`; if the script does that, a member "
            "was killed (out of memory? see the kernel log), try a smaller train.ensemble_size or "
            "train.workers") from exc
    except Exception as exc:  # a member's own error, re-raised with which member it was
        raise EnsembleError(f"ensemble member {i} failed: {type(exc).__name__}: {exc}") from exc


def run_on_spark(spark, fn: Callable, jobs: Sequence[tuple], shipped_file: str) -> list:
    """``fn(local_copy_of_shipped_file, *job)`` for each job, one Spark task per job, in job order.

    ``shipped_file`` goes to every executor with ``SparkContext.addFile`` (served by the
    driver; the executors keep a local copy), so the cluster needs no shared filesystem.
    Each task uses ``train.workers`` threads: give the executors that many cores per task
    (``spark.task.cpus``) for the members not to share cores.
    """
    from pyspark import SparkFiles

    sc = spark.sparkContext
    sc.addFile(shipped_file)
    name = os.path.basename(shipped_file)
    started = time.perf_counter()

    def task(rows):
        for job in rows:
            yield fn(SparkFiles.get(name), *job)

    try:
        out = sc.parallelize(list(jobs), len(jobs)).mapPartitions(task).collect()
    except Exception as exc:
        raise EnsembleError(f"an ensemble member failed on an executor: {str(exc).splitlines()[0]}") from exc
    log.info("ensemble: %d members trained as Spark tasks in %.1fs", len(jobs), time.perf_counter() - started)
    return out
