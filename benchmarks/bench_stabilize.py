"""Stabilization speed: the Gram pass three ways, and the whole job against one process.

1. Gram of N x 128 float32 vectors from Parquet (default 500k), in one run: embedlib.linalg
   as the job runs it (a vector_files.FileSource: one Spark task per split of the file, read with
   pyarrow; one BLAS call per Arrow batch), and the same through Spark's Parquet reader
   (``module_spark_reader``); the per-row approach (df.rdd.mapPartitions summing np.outer
   per row, as published reference code does); pyarrow + numpy in one process.
2. The stabilize job (items + users, 128 dims, read -> canonicalize -> align to a registered
   parent -> write, with its metrics, the neighbour churn over all shared ids included) at
   several sizes per side, against a single-process pyarrow + numpy script doing the same
   maths and I/O, after one untimed small run. Job and script run alternately, three times
   per size up to 1M rows (once above); the ratios are of the medians, every time is in the
   results, with the median job run's seconds per phase and its number of Spark jobs.

Usage: python benchmarks/bench_stabilize.py [--gram-rows 500000] [--sizes 250000,1000000,4000000]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, timed, write_results  # noqa: E402

from embedlib import linalg, spark_passes, vector_codec  # noqa: E402
from embedlib.config import config_from_dict  # noqa: E402
from embedlib.log import get_logger  # noqa: E402
from embedlib.vector_files import FileSource  # noqa: E402

log = get_logger("bench_stabilize")
DIM = 128
D1, D2 = "2024-01-01", "2024-01-02"
VECTOR_TYPE = pa.list_(pa.float32())


def write_matrix(path: Path, prefix: str, x: np.ndarray) -> str:
    n = len(x)
    ids = pc.binary_join_element_wise(prefix, pc.cast(pa.array(np.arange(n)), pa.string()), "")
    vec = vector_codec.list_column(x, VECTOR_TYPE)
    pq.write_table(pa.table({"id": ids, "vector": vec}), path, row_group_size=65536)
    return str(path)


def read_matrix(path: str) -> tuple[pa.Array, np.ndarray]:
    table = pq.read_table(path)
    vec = table.column("vector").combine_chunks()
    return table.column("id").combine_chunks(), vec.flatten().to_numpy().reshape(len(vec), -1)


def make_versions(folder: Path, n: int, seed: int) -> dict:
    """Version 1 (T, W) and version 2 = (T A + noise, W A^-T): same scores, scrambled space."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    scale = np.linspace(2.0, 0.5, DIM, dtype=np.float32)
    t = rng.standard_normal((n, DIM), dtype=np.float32) * scale
    w = rng.standard_normal((n, DIM), dtype=np.float32)
    a = np.eye(DIM) + 0.3 * rng.standard_normal((DIM, DIM))
    paths = {"t1": write_matrix(folder / "t1.parquet", "i", t), "w1": write_matrix(folder / "w1.parquet", "u", w)}
    t2 = t @ a.astype(np.float32)  # float32 throughout: 4M x 128 must fit next to the driver
    t2 += 0.05 * rng.standard_normal((n, DIM), dtype=np.float32)
    del t
    paths["t2"] = write_matrix(folder / "t2.parquet", "i", t2)
    del t2
    paths["w2"] = write_matrix(folder / "w2.parquet", "u", w @ np.linalg.inv(a).T.astype(np.float32))
    return paths


# ---------------------------------------------------------------------------------- Gram
def gram_per_row(spark, path: str) -> np.ndarray:
    def per_row(rows):
        g = np.zeros((DIM, DIM))
        for r in rows:
            v = np.asarray(r.vector, dtype=np.float64)
            g += np.outer(v, v)
        yield g

    return spark.read.parquet(path).select("vector").rdd.mapPartitions(per_row).reduce(np.add)


def gram_single_process(path: str) -> np.ndarray:
    g = np.zeros((DIM, DIM))
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=["vector"]):
        x = batch.column(0).flatten().to_numpy().reshape(batch.num_rows, DIM).astype(np.float64)
        g += x.T @ x
    return g


def bench_gram(spark, rows: int, repeats: int = 5) -> dict:
    """Best of ``repeats`` for the fast ways (noise on a shared machine only slows things down),
    after one untimed run of each (JVM JIT, Python workers, file cache)."""
    path = write_matrix(WORK / "gram.parquet", "i",
                        np.random.default_rng(0).standard_normal((rows, DIM), dtype=np.float32))
    source = FileSource.of(path, {"vector": "vector"})
    spark_passes.gram(spark.read.parquet(path), "vector", DIM, source)
    spark_passes.gram(spark.read.parquet(path), "vector", DIM)
    gram_single_process(path)
    times: dict = {"module": [], "module_spark_reader": [], "single_process": []}
    for _ in range(repeats):
        t, g_module = timed(lambda: spark_passes.gram(spark.read.parquet(path), "vector", DIM, source).matrix)
        times["module"].append(t)
        t, g_reader = timed(lambda: spark_passes.gram(spark.read.parquet(path), "vector", DIM).matrix)
        times["module_spark_reader"].append(t)
        t, g_single = timed(gram_single_process, path)
        times["single_process"].append(t)
    t_row, g_row = timed(gram_per_row, spark, path)
    best = {k: min(v) for k, v in times.items()}
    err = max(np.abs(g - g_single).max() for g in (g_module, g_reader, g_row)) / np.abs(g_single).max()
    log.info("gram %d x %d: module %.2fs, per-row %.2fs, single process %.2fs",
             rows, DIM, best["module"], t_row, best["single_process"])
    return {"gram_rows": rows, "gram_seconds": {**best, "per_row": t_row}, "gram_all_seconds": times,
            "gram_max_rel_diff": float(err),
            "gram_speedup_vs_per_row": t_row / best["module"],
            "gram_time_vs_single_process": best["module"] / best["single_process"],
            "gram_spark_reader_vs_single_process": best["module_spark_reader"] / best["single_process"]}


# --------------------------------------------------------------------------- whole job
CHUNK = 262144


def _chunks(n: int):
    return (slice(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK))


def _gram_chunked(x: np.ndarray) -> np.ndarray:
    g = np.zeros((x.shape[1], x.shape[1]))
    for c in _chunks(len(x)):
        xc = x[c].astype(np.float64)
        g += xc.T @ xc
    return g


def _write_published(path: Path, ids: pa.Array, x: np.ndarray, f: np.ndarray, dt: str) -> None:
    out = np.empty(x.shape, dtype=np.float32)
    for c in _chunks(len(x)):
        out[c] = x[c].astype(np.float64) @ f
    n = len(out)
    vec = vector_codec.list_column(out, VECTOR_TYPE)
    del out
    pq.write_table(pa.table({"id": ids, "vector": vec, "count": pa.nulls(n, pa.int64()),
                             "carried": pa.array(np.zeros(n, dtype=bool)),
                             "trained_dt": pa.array([dt] * n)}), path)


def single_process_job(t_path: str, w_path: str, parent_path: str, out: Path,
                       overlap_k: int = 10, overlap_queries: int = 500) -> dict:
    """The stabilize job's maths and I/O in one process: pyarrow + numpy, float64 maths.

    Row passes run in chunks (float32 storage, float64 per chunk), so 4M x 128 per side fits
    next to the Spark driver. The neighbour churn is the job's: ``overlap_queries`` shared ids
    (here the first ones: the vectors are random, so any are an unbiased sample), their
    ``overlap_k`` nearest among all shared ids on both sides (knn.nearest_neighbors).
    """
    from embedlib import knn
    from embedlib.churn import churn_metrics

    ids_t, t = read_matrix(t_path)
    ids_w, w = read_matrix(w_path)
    for ids in (ids_t, ids_w):
        assert pc.count_distinct(ids).as_py() == len(ids), "duplicate ids"
    f_t = linalg.cholesky_factor(_gram_chunked(t))
    f_w = linalg.cholesky_factor(_gram_chunked(w))
    canon = linalg.low_rank_svd_transforms(f_t.r, f_w.r)
    prev_ids, b = read_matrix(parent_path)
    joined = pa.table({"id": ids_t, "i": pa.array(np.arange(len(ids_t)))}).join(
        pa.table({"id": prev_ids, "j": pa.array(np.arange(len(prev_ids)))}), "id", join_type="inner")
    i, j = joined.column("i").to_numpy(), joined.column("j").to_numpy()
    del joined
    e = t.shape[1]
    # The job's maths: X^T X, X^T B, ||B||^2 of the raw rows; the transform on the e x e sums.
    xx, xb, sq_b = np.zeros((e, e)), np.zeros((e, e)), 0.0
    for c in _chunks(len(i)):
        x, bj = t[i[c]].astype(np.float64), b[j[c]].astype(np.float64)
        xx += x.T @ x
        xb += x.T @ bj
        sq_b += float(np.einsum("ij,ij->", bj, bj))
    ab = canon.m_t.T @ xb
    o = linalg.procrustes_rotation(ab)
    residual = linalg.alignment_residual(float(np.einsum("ij,ij->", canon.m_t, xx @ canon.m_t)), ab, sq_b, o)
    ft, fw = canon.m_t @ o, canon.m_w @ o
    cos = {"raw": np.empty(len(i)), "stabilized": np.empty(len(i))}
    for c in _chunks(len(i)):
        raw, bj = t[i[c]].astype(np.float64), b[j[c]].astype(np.float64)
        bn = np.linalg.norm(bj, axis=1)
        for k, v in (("raw", raw), ("stabilized", raw @ ft)):
            cos[k][c] = np.einsum("ij,ij->i", v, bj) / (np.linalg.norm(v, axis=1) * bn)
    metrics = {f"cosine_{k}_{s}": float(fn(v)) for k, v in cos.items()
               for s, fn in (("mean", np.mean), ("median", np.median), ("p5", lambda c: np.quantile(c, 0.05)))}
    sample = slice(0, 512)
    before = t[sample].astype(np.float64) @ w[sample].astype(np.float64).T
    stored_t = (t[sample] @ ft).astype(np.float32).astype(np.float64)
    after = stored_t @ (w[sample] @ fw).astype(np.float32).astype(np.float64).T
    metrics["score_max_rel_err"] = float(np.abs(after - before).max() / np.abs(before).max())
    queries = np.arange(min(overlap_queries, len(i)))
    new = np.empty((len(i), e), dtype=np.float32)  # stabilized shared rows, float32 as published
    for c in _chunks(len(i)):
        new[c] = t[i[c]].astype(np.float64) @ ft
    after = knn.nearest_neighbors(new, queries, overlap_k)
    del new
    before = knn.nearest_neighbors(b[j], queries, overlap_k)
    metrics.update(churn_metrics(queries.tolist(), before.tolist(), after.tolist(), overlap_k))  # ids: rows
    metrics["alignment_residual"] = residual
    del b
    out.mkdir(parents=True, exist_ok=True)
    _write_published(out / "item.parquet", ids_t, t, ft, D2)
    _write_published(out / "user.parquet", ids_w, w, fw, D2)
    return metrics


def bench_job(spark, n: int, keep: bool, repeats: int = 1) -> dict:
    """Root run on version 1, then the aligned run on version 2 and the single-process script,
    alternately ``repeats`` times (a rerun of the same dt replaces its partition); medians."""
    from embedlib import registry
    from embedlib.steps import stabilize as step

    folder = WORK / f"stabilize_{n}"
    paths = make_versions(folder, n, seed=n % 1000)
    cfg = config_from_dict({"tables": {"database": f"bench_stabilize_{n}"},
                            "stabilize": {"items": {"path": paths["t1"]}, "other": {"path": paths["w1"]},
                                          "other_side": "user"}})
    t_root, _ = timed(step.run, spark, cfg, D1)
    cfg.stabilize.items.path, cfg.stabilize.other.path = paths["t2"], paths["w2"]
    parent = registry.read_version(spark, cfg, D1)["item"].location.removeprefix("file:")
    job_times, single_times, summaries = [], [], []
    for _ in range(repeats):
        t, summary = timed(step.run, spark, cfg, D2)
        job_times.append(t)
        summaries.append(summary)
        t, single = timed(single_process_job, paths["t2"], paths["w2"], parent, folder / "single_out",
                          cfg.stabilize.overlap_k, cfg.stabilize.overlap_queries)
        single_times.append(t)
    t_job, t_single = float(np.median(job_times)), float(np.median(single_times))
    summary = summaries[int(np.argsort(job_times)[(len(job_times) - 1) // 2])]  # the median run's phases
    log.info("stabilize %d rows/side: job %.1fs, single process %.1fs (median of %d; root run %.1fs); "
             "job phases %s, %s Spark jobs", n, t_job, t_single, repeats, t_root,
             {k: round(v, 2) for k, v in summary["phase_seconds"].items()}, summary["spark_jobs"])
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    keys = ("cosine_raw_mean", "cosine_stabilized_mean", "score_max_rel_err", "alignment_residual",
            "neighbour_overlap_at_10", "neighbour_churn_share")
    return {"rows_per_side": n, "job_seconds": t_job, "single_process_seconds": t_single,
            "root_job_seconds": t_root, "job_vs_single_process": t_job / t_single,
            "job_all_seconds": job_times, "single_process_all_seconds": single_times,
            "job_phase_seconds": summary["phase_seconds"], "spark_jobs": summary["spark_jobs"],
            "job_metrics": {k: summary.get(k) for k in keys},
            "single_process_metrics": {k: single.get(k) for k in keys}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gram-rows", type=int, default=500_000)
    parser.add_argument("--sizes", default="250000,1000000,4000000", help="rows per side, comma separated")
    parser.add_argument("--warmup-rows", type=int, default=20_000, help="rows per side of the untimed warm-up job")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--keep-data", action="store_true", help="keep the generated Parquet in benchmarks/work")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of job and script per size, alternately; the medians are compared")
    parser.add_argument("--repeat-max-rows", type=int, default=1_000_000,
                        help="sizes above this run once (each run takes minutes)")
    args = parser.parse_args(argv)
    from embedlib.spark import get_spark

    shutil.rmtree(WORK / "stabilize_warehouse", ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    spark_cfg = config_from_dict({"spark": {
        "master": "local[*]", "warehouse_dir": str(WORK / "stabilize_warehouse"),
        "driver_memory": args.driver_memory, "shuffle_partitions": 16}}).spark
    spark = get_spark(spark_cfg, "bench_stabilize")
    results = bench_gram(spark, args.gram_rows)
    sizes = [int(s) for s in args.sizes.split(",")]
    # One untimed run of the whole job flow first: the first join, broadcast, metastore table
    # creation etc. of the session would otherwise land on the smallest size.
    bench_job(spark, args.warmup_rows, keep=False)
    runs = []
    for n in sizes:  # results so far are written after each size (long runs can be cut)
        runs.append(bench_job(spark, n, args.keep_data, args.repeats if n <= args.repeat_max_rows else 1))
        write_results("bench_stabilize", {**results, "job": runs, "complete": False})
    results["job"] = runs
    results["complete"] = True
    by_size = {r["rows_per_side"]: r for r in runs}
    if 1_000_000 in by_size:
        results["job_time_vs_single_process_1m"] = by_size[1_000_000]["job_vs_single_process"]
        results["job_phase_seconds_1m"] = by_size[1_000_000]["job_phase_seconds"]
        results["spark_jobs_1m"] = by_size[1_000_000]["spark_jobs"]
    if len(sizes) > 1:
        results[f"job_time_growth_{_label(sizes[0])}_to_{_label(sizes[-1])}"] = (
            by_size[sizes[-1]]["job_seconds"] / by_size[sizes[0]]["job_seconds"])
        results["rows_growth"] = sizes[-1] / sizes[0]
    spark.stop()
    if not args.keep_data:  # the published tables of every size: gigabytes
        shutil.rmtree(WORK / "stabilize_warehouse", ignore_errors=True)
    return write_results("bench_stabilize", results)


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


if __name__ == "__main__":
    main()
