"""Run report of one dt, from the tables alone: ``report.json`` (every figure) and ``index.html``.

Reads the registry, the step summaries (run_stats), the sequences and item_stats partitions
of dt, train_runs, the delta table, and the raw and published item vectors of dt and of its
parent version; writes ``<report.out_dir>/<dt>/``. Every section says why when its table or
partition is missing (a dt that only ran some steps, a root version with no parent), so a
report can be built for any dt and rebuilt at any time (``jobs/report.py``, ``embedlib report``).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from embedlib import registry, run_stats, spark_passes, tables
from embedlib.config import Config
from embedlib.log import get_logger, step
from embedlib.registry import VersionRecord, json_safe

log = get_logger(__name__)

COSINE_KEYS = ("mean", "median", "p5")


def build_report(spark: SparkSession, cfg: Config, dt: str, out_dir: str | None = None) -> Path:
    """Write the report of ``dt`` under ``out_dir`` (default report.out_dir); the index.html path."""
    from embedlib import report_page  # matplotlib (the ``report`` extra) only when rendering

    with step(log, f"report dt={dt}", spark):
        figures = collect_figures(spark, cfg, dt)
        folder = Path(out_dir or cfg.report.out_dir) / dt
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):
            stale.unlink()
        (folder / "report.json").write_text(json.dumps(json_safe(figures), indent=1, sort_keys=True, default=str))
        page = report_page.render(figures, folder)
    log.info("report for dt=%s: %s", dt, page.resolve())
    return page


def collect_figures(spark: SparkSession, cfg: Config, dt: str) -> dict:
    """Every figure of the report of ``dt`` as plain data (what report.json holds)."""
    versions = registry_versions(spark, cfg, dt)
    steps = run_stats.read(spark, cfg, dt)
    current = versions.get(dt)
    return {
        "dt": dt,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.source,
        "version": version_figures(current, dt),
        "cosine": cosine_figures(spark, cfg, dt, current),
        "trends": trend_figures(versions, cfg.stabilize.overlap_k),
        "churn": churn_figures(versions, dt, cfg.stabilize.overlap_k),
        "sequences": sequence_figures(spark, cfg, dt, steps.get("build_sequences")),
        "training": training_figures(spark, cfg, dt, steps.get("train_item2vec")),
        "hit_rate": hit_rate_figures(steps.get("forward_hit_rate")),
        "changes": change_figures(spark, cfg, dt, versions),
        "steps": steps,
    }


def registry_versions(spark: SparkSession, cfg: Config, dt: str) -> dict[str, dict[str, VersionRecord]]:
    """{dt: {side: record}} of the latest report.trend_versions registered dts up to ``dt``."""
    dts = [d for d in registry.registered_dts(spark, cfg) if d <= dt][-cfg.report.trend_versions:]
    versions: dict[str, dict[str, VersionRecord]] = {d: {} for d in dts}
    if dts:
        registry_df = spark.table(tables.table_name(cfg.tables, "versions"))
        rows = registry_df.where(F.col(tables.PARTITION_COL).isin(dts)).collect()
        for row in rows:
            versions[row[tables.PARTITION_COL]][row.side] = VersionRecord.from_row(row)
    return versions


def version_figures(current: dict | None, dt: str) -> dict:
    if not current:
        return {"missing": f"dt={dt} is not a registered version (stabilize has not published it)"}
    item = current["item"]
    return {"parent_dt": item.parent_dt, "root": item.root, "root_reason": item.root_reason,
            "mode": item.mode, "dim": item.dim, "code_version": item.code_version,
            "created_at": item.created_at, "sides": {s: {"rows": r.n_rows, "carried": r.n_carried}
                                                     for s, r in sorted(current.items())},
            "metrics": item.metrics}


def cosine_figures(spark: SparkSession, cfg: Config, dt: str, current: dict | None) -> dict:
    """Same-id cosine of dt's item vectors, raw and stabilized, to the parent's published ones."""
    item = _chained_item(current, dt, "same-id cosines need")
    if isinstance(item, dict):
        return item
    bins = cfg.report.histogram_bins
    parent_df, _ = registry.read_published(spark, cfg, item.parent_dt, "item")
    published_df, _ = registry.read_published(spark, cfg, dt, "item")
    raw_df = _partition(spark, tables.embeddings_table(cfg.tables, "item", raw=True), dt)
    figures = {"parent_dt": item.parent_dt, "edges": np.linspace(-1.0, 1.0, bins + 1).tolist(),
               "stabilized": cosine_histogram(published_df.where(~F.col("carried")), parent_df, item.dim, bins),
               "raw": (cosine_histogram(raw_df, parent_df, item.dim, bins) if isinstance(raw_df, DataFrame)
                       else raw_df)}
    figures["registry"] = {f"{c}_{k}": item.metrics.get(f"cosine_{c}_{k}")
                           for c in ("raw", "stabilized") for k in COSINE_KEYS}
    return figures


def cosine_histogram(vectors_df: DataFrame, parent_df: DataFrame, dim: int, bins: int) -> dict:
    """Histogram over [-1, 1] (``bins`` bins) and mean of cos(vector, parent vector) on shared ids.

    The cosines are computed on Arrow batches (spark_passes.row_cosines) and binned on Spark: only
    the bin counts and sums reach the driver, whatever the number of items.
    """
    joined_df = (vectors_df.select("id", F.col("vector").alias("a"))
                 .join(parent_df.select("id", F.col("vector").alias("b")), on="id", how="inner"))
    cos_df = spark_passes.row_cosines(joined_df, "a", "b", dim, {"cosine": None})
    bin_col = F.least(F.greatest(F.floor((F.col("cosine") + 1) / 2 * bins), F.lit(0)), F.lit(bins - 1))
    rows = (cos_df.groupBy(bin_col.cast("int").alias("bin"))
            .agg(F.count(F.lit(1)).alias("n"), F.sum("cosine").alias("total")).collect())
    counts = np.zeros(bins, dtype=np.int64)
    for row in rows:
        counts[row.bin] = row.n
    n = int(counts.sum())
    return {"counts": counts.tolist(), "rows": n,
            "mean": sum(row.total for row in rows) / n if n else None}


def trend_figures(versions: dict[str, dict[str, VersionRecord]], overlap_k: int) -> dict:
    """Quality metrics of the item side over the registered versions, oldest first."""
    keys = ("cosine_raw_mean", "cosine_stabilized_mean", "cosine_stabilized_p5",
            f"neighbour_overlap_at_{overlap_k}", "neighbour_churn_share", "score_max_rel_err",
            "alignment_residual")
    items = [sides.get("item") for sides in versions.values()]
    trends = {"dt": list(versions), "overlap_k": overlap_k,
              "root": [bool(rec and rec.root) for rec in items]}
    trends.update({key: [rec.metrics.get(key) if rec else None for rec in items] for key in keys})
    return trends


def churn_figures(versions: dict[str, dict[str, VersionRecord]], dt: str, overlap_k: int) -> dict:
    """dt's neighbour churn to its parent, from its registry metrics (churn.churn_metrics):
    overlap@k, the share of queried items that kept less than half their neighbours, and the
    items whose neighbourhoods changed most, with their neighbours before and after. The
    trend over past versions is in ``trend_figures``."""
    item = _chained_item(versions.get(dt), dt, "neighbour churn needs")
    if isinstance(item, dict):
        return item
    m = item.metrics
    if m.get(f"neighbour_overlap_at_{overlap_k}") is None or "neighbour_churn_share" not in m:
        return {"missing": f"the registry row of {dt} records no neighbour churn at k={overlap_k} "
                           "(too few ids shared with the parent, another stabilize.overlap_k, or a "
                           "version registered before churn was measured)"}
    return {"parent_dt": item.parent_dt, "k": overlap_k, "overlap": m[f"neighbour_overlap_at_{overlap_k}"],
            "churn_share": m["neighbour_churn_share"], "queries": m.get("overlap_queries"),
            "most_changed": m.get("most_changed", [])}


def sequence_figures(spark: SparkSession, cfg: Config, dt: str, summary: dict | None) -> dict:
    """Sequence length distribution, item popularity curve, and rows dropped by reason."""
    figures: dict = {}
    seq_df = _partition(spark, tables.table_name(cfg.tables, "sequences"), dt)
    if isinstance(seq_df, DataFrame):
        rows = seq_df.groupBy("n_items").count().orderBy("n_items").collect()
        figures["length"] = {"n_items": [r.n_items for r in rows], "sequences": [r["count"] for r in rows]}
    else:
        figures["length"] = seq_df
    stats_df = _partition(spark, tables.table_name(cfg.tables, "item_stats"), dt)
    if isinstance(stats_df, DataFrame):
        rows = stats_df.groupBy("n_events").count().collect()
        figures["popularity"] = popularity_curve(np.array([r.n_events for r in rows], dtype=np.int64),
                                                 np.array([r["count"] for r in rows], dtype=np.int64),
                                                 cfg.report.max_points)
    else:
        figures["popularity"] = stats_df
    if not summary:
        figures["dropped"] = {"missing": f"no build_sequences summary recorded for dt={dt}"}
        return figures
    figures["dropped"] = {**summary.get("dropped", {}),
                          "below_item_min_count": summary.get("items", {}).get("events_removed", 0),
                          "in_too_short_sequences": summary.get("sequences", {}).get("short_dropped_items", 0)}
    figures["counts"] = {k: summary.get(k) for k in ("input_rows", "in_window", "outside_window",
                                                     "items", "sequences")}
    return figures


def popularity_curve(n_events: np.ndarray, n_items: np.ndarray, max_points: int) -> dict:
    """Events of the item at each popularity rank (log-spaced ranks), from counts of counts.

    Parameters
    ----------
    n_events : ndarray of int, shape (m,) - distinct per-item event counts.
    n_items : ndarray of int, shape (m,) - how many items have each of them.
    """
    order = np.argsort(-n_events)
    values, mult = n_events[order], n_items[order]
    last_rank = np.cumsum(mult)  # rank of the last item with each value
    cum_events = np.cumsum(values * mult)
    total_items, total_events = int(last_rank[-1]), int(cum_events[-1])
    ranks = np.unique(np.geomspace(1, total_items, max_points).round().astype(np.int64))

    def top_events(k: int) -> int:
        i = int(np.searchsorted(last_rank, k))
        before = last_rank[i - 1] if i else 0
        return int((cum_events[i - 1] if i else 0) + (k - before) * values[i])

    return {"rank": ranks.tolist(), "n_events": values[np.searchsorted(last_rank, ranks)].tolist(),
            "items": total_items, "events": total_events,
            "top_1pct_share": top_events(max(1, total_items // 100)) / total_events,
            "top_10pct_share": top_events(max(1, total_items // 10)) / total_events}


def training_figures(spark: SparkSession, cfg: Config, dt: str, summary: dict | None) -> dict:
    """This dt's trainer metadata, throughput over past runs, and the loss if recorded."""
    table = tables.table_name(cfg.tables, "train_runs")
    dts = [d for d in tables.list_partitions(spark, table) if d <= dt][-cfg.report.trend_versions:]
    if dt not in dts:
        return {"missing": f"{table} has no partition dt={dt} (train_item2vec has not run)"}
    cols = ["trainer", "vocab_size", "corpus_tokens", "corpus_sequences", "export_seconds",
            "train_seconds", "words_per_second"]
    rows = (spark.table(table).where(F.col(tables.PARTITION_COL).isin(dts))
            .select(tables.PARTITION_COL, *cols).orderBy(tables.PARTITION_COL).collect())
    this_run = next(r for r in rows if r[tables.PARTITION_COL] == dt)
    return {"run": {c: this_run[c] for c in cols},
            "trend": {"dt": [r[tables.PARTITION_COL] for r in rows],
                      "words_per_second": [r.words_per_second for r in rows],
                      "train_seconds": [r.train_seconds for r in rows]},
            # A trainer that records its loss puts it in its step summary as epoch_losses.
            "epoch_losses": (summary or {}).get("epoch_losses")}


def hit_rate_figures(summary: dict | None) -> dict:
    """HR@k and NDCG@k of the parent version on dt's transitions, next to the popularity and
    co-occurrence baselines (the forward_hit_rate step's summary)."""
    if summary is None:
        return {"missing": "forward_hit_rate has not run for this dt"}
    if not summary:
        return {"missing": "no parent version (a root) or no transitions on this dt: nothing to score"}
    rows = {"parent version": ("hr", "ndcg"), "popularity": ("popularity_hr", "popularity_ndcg"),
            "co-occurrence kNN": ("cooccurrence_hr", "cooccurrence_ndcg")}
    return {"version": summary.get("version"), "pairs": summary.get("test_pairs"),
            "rows": {name: {"hr": summary.get(hr), "ndcg": summary.get(ndcg)}
                     for name, (hr, ndcg) in rows.items() if summary.get(hr) is not None}}


def change_figures(spark: SparkSession, cfg: Config, dt: str,
                   versions: dict[str, dict[str, VersionRecord]]) -> dict:
    """Rows carried, evicted and in the delta table for dt, and their trend (item side)."""
    delta_table = tables.table_name(cfg.tables, "deltas")
    delta_df = _partition(spark, delta_table, dt)
    if not isinstance(delta_df, DataFrame):
        return delta_df
    delta: dict[str, dict[str, int]] = {}
    for row in delta_df.groupBy("side", "change").count().collect():
        delta.setdefault(row.side, {})[row.change] = row["count"]
    current = versions.get(dt, {})
    items = [sides.get("item") for sides in versions.values()]
    return {"delta": delta,
            "carried": {side: rec.n_carried for side, rec in sorted(current.items())},
            "rows": {side: rec.n_rows for side, rec in sorted(current.items())},
            "trend": {"dt": list(versions),
                      "carried": [rec.n_carried if rec else None for rec in items],
                      **{change: [(rec.metrics.get("delta") or {}).get(f"item_{change}", 0) if rec else None
                                  for rec in items] for change in ("new", "moved", "evicted")}}}


def _chained_item(current: dict | None, dt: str, what_needs: str):
    """dt's item record when dt is a registered version with a parent, else a {"missing": why}
    figure that says what (``what_needs``, e.g. "same-id cosines need") needs the parent."""
    if not current:
        return {"missing": f"dt={dt} is not a registered version"}
    item = current["item"]
    if item.parent_dt is None:
        return {"missing": f"no parent version: {dt} is a root ({item.root_reason}); "
                           f"{what_needs} a parent to compare with"}
    return item


def _partition(spark: SparkSession, table: str, dt: str):
    """Partition ``dt`` of ``table``, or a {"missing": why} figure when it does not exist."""
    df = tables.find_partition(spark, table, dt)
    return {"missing": f"{table} has no partition dt={dt}"} if df is None else df
