"""Stabilization quality on the real MovieLens log (common.MOVIELENS, beside the repository).

Sequences come from conf/movielens.yaml (dt 2018-09-24, the whole history); the last 10% of
sequences by start time are the next-item hold-out. Two pairs of versions, each trained with
the gensim trainer of conf/movielens.yaml:
- same data: two runs on the training sequences with different seeds;
- next window: a parent trained on the sequences that start WINDOW_DAYS before the cut, the
  child on all training sequences (the next window).
For each pair the parent is published as a root (canonicalized) and the child is
stabilized against it in each mode; reported: same-id cosine raw vs stabilized, the
best-linear-map reference (least squares, which an orthogonal map cannot beat on average),
neighbour overlap@10 between versions (the ceiling no alignment can pass), score
preservation, and HR@10 of the child's vectors before and after each mode.

Usage: python benchmarks/stability_movielens.py [--set train.epochs=10 ...]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

import numpy as np
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import movielens_sequences, neighbour_overlap, write_results  # noqa: E402

from embedlib import evaluate, trainers  # noqa: E402
from embedlib.alignment import TodayAndParent, stabilize  # noqa: E402
from embedlib.log import get_logger  # noqa: E402

WINDOW_DAYS = 90
log = get_logger("stability_movielens")


def to_numpy(df):
    return evaluate.vectors_to_numpy(df)


def joined(ids_a, a, ids_b, b):
    """Rows of a and b for the ids they share, in the same order."""
    pos_b = {i: k for k, i in enumerate(ids_b)}
    rows = [(k, pos_b[i]) for k, i in enumerate(ids_a) if i in pos_b]
    ia, ib = (np.array(x) for x in zip(*rows))
    return a[ia].astype(np.float64), b[ib].astype(np.float64)


def mean_cosine(a, b):
    return float(np.mean(np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def compare(spark, cfg, parent, child, holdout) -> dict:
    """Publish ``parent`` as a root, stabilize ``child`` against it in each mode; the figures."""
    ctx = lambda run: TodayAndParent("context", run.context_df) if run.context_df is not None else None  # noqa: E731
    root = stabilize(TodayAndParent("items", parent.item_df), ctx(parent), cfg.stabilize)
    p_ids, p_vec = to_numpy(root.published())
    c_ids, c_vec = to_numpy(child.item_df)
    a_raw, b = joined(c_ids, c_vec, p_ids, p_vec)
    lstsq = np.linalg.lstsq(a_raw, b, rcond=None)[0]
    out = {"joined_ids": len(b), "raw_cosine": mean_cosine(a_raw, b),
           "best_linear_cosine": mean_cosine(a_raw @ lstsq, b),
           "hr10_raw": evaluate.next_item_metrics(c_ids, c_vec, holdout, 10)["hr"]}
    prev_df = root.published().select("id", "vector")
    for mode in ("canonicalize_align", "align"):
        cfg.stabilize.mode = mode
        res = stabilize(TodayAndParent("items", child.item_df, prev_df), ctx(child), cfg.stabilize,
                        prev_dim=p_vec.shape[1])
        s_ids, s_vec = to_numpy(res.published())
        a, b2 = joined(s_ids, s_vec, p_ids, p_vec)
        out[mode] = {"stabilized_cosine": mean_cosine(a, b2),
                     "cosine_median": res.metrics.get("cosine_stabilized_median"),
                     "cosine_p5": res.metrics.get("cosine_stabilized_p5"),
                     "score_max_rel_err": res.metrics["score_max_rel_err"],
                     "alignment_residual": res.metrics.get("alignment_residual"),
                     "neighbour_overlap_at_10": neighbour_overlap(a, b2, 10, 2000),
                     "hr10": evaluate.next_item_metrics(s_ids, s_vec, holdout, 10)["hr"]}
    cfg.stabilize.mode = "auto"
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    loaded = movielens_sequences("stability_movielens", args.overrides)
    if loaded is None:
        return {}
    cfg, spark, seq_df = loaded
    holdout = evaluate.temporal_holdout(seq_df, cfg.evaluate)
    cut = _dt.datetime.fromisoformat(holdout.cut_time)
    train_df = holdout.train_df.persist()
    window_df = train_df.where(F.col("start_ts") < F.lit(cut - _dt.timedelta(days=WINDOW_DAYS)))
    log.info("training 4 models (%s trainer)", cfg.train.trainer)
    seed = cfg.train.seed
    run_a = trainers.train(spark, train_df, cfg.train, corpus_name="full_a")
    cfg.train.seed = seed + 1
    run_b = trainers.train(spark, train_df, cfg.train, corpus_name="full_b")
    cfg.train.seed = seed
    run_w = trainers.train(spark, window_df, cfg.train, corpus_name="window")
    same = compare(spark, cfg, run_a, run_b, holdout)
    nxt = compare(spark, cfg, run_w, run_a, holdout)
    pop = evaluate.next_item_metrics(*to_numpy(run_a.item_df), holdout, 10)["popularity_hr"]
    results = {
        "same_data": same, "next_window": nxt, "window_days": WINDOW_DAYS, "test_pairs": len(holdout.queries),
        "hr10_popularity": pop, "train": {k: v for k, v in vars(cfg.train).items() if k != "corpus_dir"},
        "same_data_raw_cosine": same["raw_cosine"],
        "same_data_stabilized_cosine": same["canonicalize_align"]["stabilized_cosine"],
        "same_data_align_only_cosine": same["align"]["stabilized_cosine"],
        "next_window_raw_cosine": nxt["raw_cosine"],
        "next_window_stabilized_cosine": nxt["canonicalize_align"]["stabilized_cosine"],
        "best_linear_cosine": same["best_linear_cosine"],
        "neighbour_overlap_at_10": same["canonicalize_align"]["neighbour_overlap_at_10"],
        "score_preservation_max_rel_err": max(same["canonicalize_align"]["score_max_rel_err"],
                                              nxt["canonicalize_align"]["score_max_rel_err"]),
    }
    spark.stop()
    return write_results("stability_movielens", results)


if __name__ == "__main__":
    main()
