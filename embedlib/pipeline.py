"""The daily pipeline: every step for one dt, and date ranges (backfills) in date order.

Every step runs holding its run's lease of (database, dt) (embedlib/lease.py), so two runs
of one dt never write it at once. A backfill with ``parallel > 1`` runs steps 1-2
(sequences and training, which read only the log) of up to that many dts at once in threads
of one driver, and the later steps in date order, each dt against the version published
before it: the same versions as one dt after the other.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from embedlib import evaluate, lease, registry, report, run_stats, tables
from embedlib.config import Config
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger
from embedlib.sequences import EmptyInputError
from embedlib.steps import build_neighbors, build_sequences, stabilize, train_item2vec
from embedlib.steps.order import STEP_NAMES

log = get_logger(__name__)


def forward_hit_rate(spark: SparkSession, cfg: Config, dt: str) -> dict:
    """HR@k of the PARENT version on the transitions of day ``dt`` (never trained on them).

    Queries are consecutive items of dt's sequences that start on day dt; the popularity
    baseline answers with the parent's most trained items, the co-occurrence baseline
    (``evaluate.cooccurrence_window`` > 0) with each query's most co-occurring items in the
    parent's sequences. Empty dict for a root version.
    """
    parent = registry.read_version(spark, cfg, dt)["item"].parent_dt
    if parent is None:
        return {}
    published_df, _ = registry.read_published(spark, cfg, parent, "item")
    day = _dt.datetime.fromisoformat(dt).replace(tzinfo=_dt.timezone.utc)
    seq_df = tables.read_partition(spark, tables.table_name(cfg.tables, "sequences"), dt)
    pairs = evaluate.held_out_pairs(seq_df.where(F.col("start_ts") >= F.lit(day)), published_df, 0).toArrow()
    if pairs.num_rows == 0:
        return {}
    k = cfg.evaluate.k
    popular = [r.id for r in published_df.orderBy(F.desc("count"), "id").limit(k + 1).collect()]
    holdout = evaluate.HoldOut(None, np.array(pairs["query"].to_pylist(), dtype=object),
                               np.array(pairs["target"].to_pylist(), dtype=object),
                               np.array(popular, dtype=object), day.isoformat())
    ids, vectors = evaluate.vectors_to_numpy(published_df)
    out = {"version": parent, **evaluate.next_item_metrics(ids, vectors, holdout, k)}
    if cfg.evaluate.cooccurrence_window:
        trained = dataclasses.replace(holdout, train_df=tables.read_partition(
            spark, tables.table_name(cfg.tables, "sequences"), parent))
        out.update(evaluate.cooccurrence_metrics(spark, trained, cfg.evaluate.cooccurrence_window, k))
    return out


def write_report(spark: SparkSession, cfg: Config, dt: str) -> dict:
    """The run report of ``dt`` (report.out_dir/<dt>/index.html); {"path": its path}."""
    path = str(report.build_report(spark, cfg, dt).resolve())
    log.info("report for dt=%s: %s", dt, path)
    return {"path": path}


# Run function of each step, in the order of embedlib/steps/order.py (the DAG's too).
STEPS: dict[str, Callable[[SparkSession, Config, str], dict]] = {
    name: {"build_sequences": build_sequences.run, "train_item2vec": train_item2vec.run,
           "stabilize": stabilize.run, "build_neighbors": build_neighbors.run,
           "forward_hit_rate": forward_hit_rate, "report": write_report}[name]
    for name in STEP_NAMES
}


def date_range(first: str, last: str) -> list[str]:
    """Every dt from ``first`` to ``last`` inclusive, in order."""
    start, end = _dt.date.fromisoformat(first), _dt.date.fromisoformat(last)
    if end < start:
        raise EmbedlibError(f"--to {last} is before --from {first}")
    return [(start + _dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


# Steps that read only the log, never a published version: a backfill may run them ahead.
AHEAD_STEPS = STEP_NAMES[:2]


class BackfillError(EmbedlibError):
    """A backfill cannot run as asked (e.g. in parallel on the embedded metastore)."""


def run_step(spark: SparkSession, cfg: Config, dt: str, name: str) -> dict:
    """Run one step for ``dt``, holding dt's lease, and record its summary in run_stats."""
    with lease.held(spark, cfg, dt, spark.sparkContext.appName):
        summary = STEPS[name](spark, cfg, dt)
        run_stats.record(spark, cfg, dt, name, summary)
    return summary


def run_dt(spark: SparkSession, cfg: Config, dt: str, steps: tuple = STEP_NAMES) -> dict:
    """Run ``steps`` (default every step) for ``dt`` in order, holding dt's lease
    throughout; {step name: summary}."""
    with lease.held(spark, cfg, dt, spark.sparkContext.appName):
        return {name: run_step(spark, cfg, dt, name) for name in steps}


def check_parallel(cfg: Config, parallel: int) -> None:
    """Refuse a parallel backfill where it cannot run (a clear BackfillError)."""
    if parallel < 1:
        raise BackfillError(f"--parallel must be at least 1, got {parallel}")
    if parallel > 1 and not cfg.spark.hive_metastore_uris:
        raise BackfillError(
            f"--parallel {parallel} needs a Hive metastore service (spark.hive_metastore_uris): the "
            "embedded Derby metastore serves one run at a time; use --parallel 1, or start one "
            "(scripts/metastore.py, docs/operations.md)")
    if parallel > 1 and cfg.train.init == "warm":
        raise BackfillError(f"--parallel {parallel} with train.init=warm: each dt trains from the version "
                            "published the day before, so training cannot run ahead; use --parallel 1")


@contextlib.contextmanager
def _steps_ahead(spark: SparkSession, cfg: Config, dts: list[str],
                 parallel: int) -> Iterator[Callable[[str], dict]]:
    """run_dt for run_range; with ``parallel > 1``, AHEAD_STEPS of up to ``parallel`` dts
    run in threads ahead of the caller (the next dt starts when one is taken for publishing),
    each holding its dt's lease until its last step."""
    if parallel == 1:
        yield lambda dt: run_dt(spark, cfg, dt)
        return
    job = spark.sparkContext.appName

    def ahead(dt: str) -> tuple[lease.Lease, dict]:
        taken = lease.acquire(spark, cfg, dt, job)
        try:
            return taken, {name: run_step(spark, cfg, dt, name) for name in AHEAD_STEPS}
        except BaseException:
            lease.release(spark, taken)
            raise

    def submit_next() -> None:
        dt = next(waiting, None)
        if dt is not None:
            futures[dt] = pool.submit(ahead, dt)

    def rest(dt: str) -> dict:
        taken, summaries = futures.pop(dt).result()
        submit_next()  # at most ``parallel`` dts trained ahead and not yet published
        try:
            return {**summaries, **run_dt(spark, cfg, dt, STEP_NAMES[len(AHEAD_STEPS):])}
        finally:
            lease.release(spark, taken)

    pool = ThreadPoolExecutor(parallel, thread_name_prefix="backfill")
    waiting, futures = iter(dts), {}
    for _ in range(parallel):
        submit_next()
    try:
        yield rest
    finally:  # stopped early: wait for the threads, give back the leases of what they ran
        pool.shutdown(wait=True, cancel_futures=True)
        for future in futures.values():
            if not future.cancelled() and future.exception() is None:
                lease.release(spark, future.result()[0])


def run_range(spark: SparkSession, cfg: Config, dts: list[str],
              continue_on_empty: bool = False, parallel: int = 1) -> dict[str, dict]:
    """Run ``dts`` in order. A day without data (EmptyInputError) stops the backfill with
    advice, or with ``continue_on_empty`` is skipped ({"skipped": why}) and the next dt's
    parent is the last version before it (within publish.max_age_days). ``parallel``: steps
    1-2 of that many dts at once (check_parallel says where that is allowed)."""
    check_parallel(cfg, parallel)
    results = {}
    with _steps_ahead(spark, cfg, dts, parallel) as run_one:
        for i, dt in enumerate(dts, 1):
            log.info("pipeline dt=%s (%d of %d)", dt, i, len(dts))
            try:
                results[dt] = run_one(dt)
            except EmptyInputError as exc:
                if not continue_on_empty:
                    rest = f"--from {dts[i]} --to {dts[-1]}" if i < len(dts) else None
                    raise EmptyInputError(
                        f"{exc}. The backfill stopped at dt={dt} after {i - 1} of {len(dts)} dts; to skip "
                        "days without data, rerun with --continue-on-empty" +
                        (f", or go on after it with {rest}" if rest else "")) from None
                log.warning("dt=%s skipped (--continue-on-empty): %s", dt, exc)
                results[dt] = {"skipped": str(exc)}
    return results


def summary_rows(results: dict[str, dict]) -> list[dict]:
    """One flat row per dt with the figures an operator looks at first."""
    rows = []
    for dt, steps in results.items():
        seq, stab, ev = steps.get("build_sequences", {}), steps.get("stabilize", {}), steps.get("forward_hit_rate", {})
        if "skipped" in steps:
            rows.append({"dt": dt, "skipped": "no data"})
            continue
        rows.append({
            "dt": dt,
            "bad_rows": sum(seq.get("dropped", {}).values()),
            "sequences": seq.get("sequences", {}).get("written"),
            "items": stab.get("rows", {}).get("item"),
            "carried": stab.get("carried", {}).get("item"),
            "evicted": stab.get("evicted"),
            "parent": stab.get("parent_dt"),
            "cos_raw": stab.get("cosine_raw_mean"),
            "cos_stab": stab.get("cosine_stabilized_mean"),
            "overlap@10": stab.get("neighbour_overlap_at_10"),
            "churn>half": stab.get("neighbour_churn_share"),
            "score_err": stab.get("score_max_rel_err"),
            "hr@10_parent": ev.get("hr"),
            "hr@10_popular": ev.get("popularity_hr"),
            "hr@10_cooc": ev.get("cooccurrence_hr"),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain fixed-width text table (header from the first row's keys)."""
    if not rows:
        return "(no rows)"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 else f"{value:.3f}"
    return str(value)
