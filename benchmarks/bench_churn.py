"""Neighbour churn over a chain of versions on MovieLens: single model, seed ensembles, warm start.

The real log (../shared/data/movielens-latest-small, sequences as conf/movielens.yaml builds
them) is cut into a chain of VERSIONS versions, the training window growing STEP_DAYS at a
time from FIRST_CUT, as daily or monthly production retrains would see it. Every version
of every variant is trained on the sequences that start before its cut (the project's
corpus export, then embedlib.item2vec), stabilized against the variant's previous version
as the stabilize step does (canonicalize with the context side, Procrustes onto the
parent; linalg's routines, in numpy here) and measured:

- overlap@10 to the parent: for QUERIES shared ids, the share of their 10 cosine
  neighbours, searched among all shared ids, that the parent also has. The queries are
  drawn (seeded, without replacement) in proportion to the items' counts, so the figure
  weighs items as their traffic does; ``overlap_uniform_*`` draws them uniformly, which
  weighs the long tail of rarely seen (and noisier) items as much as the popular ones.
  Earlier figures (stability_movielens, 0.61) queried the 2000 most frequent ids;
- the stabilized same-id cosine to the parent (mean over shared ids);
- HR@10 and NDCG@10 of the published vectors on the next-item transitions of the
  sequences that start in the HORIZON_DAYS after the cut (the same pairs for every
  variant, so ratios are paired);
- training CPU and wall seconds: the gensim training and the ensemble's alignment and
  mean (the vocabulary scan excluded everywhere); the ensembles' process start-up (spawn,
  imports) is reported on its own.

Variants: single (train.seed, cold), ensemble2 and ensemble4 (local process pool), warm
(init from the previous warm version's raw vectors, WARM settings: the best trade of
overlap and HR@10 among 1-10 epochs at alpha 0.005-0.025 tried on the first pair; more
epochs or a higher alpha forget the parent, ending below a cold start's overlap) and
warm_cold84 (the same with train.cold_every_days=84).

ppmi_svd (issue 23): the count-based trainer (embedlib.ppmi_svd, PPMI settings: window 5, no
context smoothing, no shift, 64 dimensions, p = 1, as the issue's numpy trial), trained on
Spark from the same sequences, published the same way; its training CPU is the Spark JVM's
(with its Python workers) and the driver's over the whole train call (counts, PPMI, SVD),
gensim's is its threads' over the training alone (the corpus export and vocabulary scan
excluded), so the ratio favours gensim. ``same_data_overlap_ppmi_svd``: a second training
on the second version's data, published against the first training as its parent.
Smoothed variants (``<variant>_smooth<beta>``, e.g. ppmi_svd_smooth0.5, ensemble4_smooth0.3):
the variant's training of each version, published as the stabilize step does with
stabilize.smoothing = beta (beta * aligned + (1 - beta) * the parent's published vector for
the ids the parent has); the training is shared with the unsmoothed variant, so their
training CPU is the same. ``best_overlap_variant``: the variant with the highest overlap
among those whose HR@10 is at least BEST_MIN_HR_RATIO times the single model's.
Settings variants (``ppmi_svd_<setting><value>``: dims, window, power (svd_power_iterations),
oversample (svd_oversample), eigen (eigen_weight), weighting (cooccurrence_weighting), alpha
(ppmi_smoothing, the context exponent), e.g.
ppmi_svd_dims128, ppmi_svd_weightingdistance): PPMI with that one setting changed, for what
moves ppmi_svd's overlap; ``--settings`` runs PPMI_SETTING_VARIANTS into
bench_churn_ppmi_settings.json.
The results file is written after every version from the second on, so a run cut short
keeps the versions it finished (``versions`` against ``versions_requested``).

``--variants single,ppmi_svd`` runs only those (the full set takes long on a shared
machine) and writes benchmarks/results/bench_churn_<variants>.json, so bench_churn.json
keeps the full run's figures.

Usage: python benchmarks/bench_churn.py [--versions 8] [--variants single,ppmi_svd] [--set train.epochs=10 ...]
       [--out NAME]
       python benchmarks/bench_churn.py --settings --versions 6   (bench_churn_ppmi_settings.json)
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import resource
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PPMI, movielens_sequences, write_results  # noqa: E402

from embedlib import evaluate, item2vec, knn, linalg, ppmi_svd, spark_passes  # noqa: E402
from embedlib.config import ConfigError, TrainConfig  # noqa: E402
from embedlib.item2vec import WarmStart  # noqa: E402
from embedlib.log import get_logger  # noqa: E402

FIRST_CUT = _dt.datetime(2017, 1, 15, tzinfo=_dt.timezone.utc)
STEP_DAYS = 28
HORIZON_DAYS = 90
QUERIES = 500
K = 10
WARM = {"warm_epochs": 2, "warm_alpha": 0.01}
VARIANTS = ("single", "ensemble2", "ensemble4", "warm", "warm_cold84", "ppmi_svd", "ppmi_svd_smooth0.7",
            "ppmi_svd_smooth0.5", "ppmi_svd_smooth0.3", "ensemble4_smooth0.5", "ensemble4_smooth0.3")
# best_overlap_variant: the variant with the highest overlap among those at >= this HR@10 ratio
BEST_MIN_HR_RATIO = 1.05
# ppmi_svd_<setting><value> variants (e.g. ppmi_svd_dims128): PPMI with one setting changed.
PPMI_SETTINGS = {"dims": "vector_size", "window": "window", "power": "svd_power_iterations",
                 "oversample": "svd_oversample", "eigen": "eigen_weight", "weighting": "cooccurrence_weighting",
                 "alpha": "ppmi_smoothing"}
# The settings file (--variants PPMI_SETTING_VARIANTS --out bench_churn_ppmi_settings): what moves
# ppmi_svd's overlap.
PPMI_SETTING_VARIANTS = ("single", "ppmi_svd", "ppmi_svd_dims128", "ppmi_svd_oversample54", "ppmi_svd_window10",
                         "ppmi_svd_weightingdistance", "ppmi_svd_alpha0.75")
log = get_logger("bench_churn")


def cpu_seconds() -> float:
    """This process's CPU seconds plus those of its finished children (the ensemble's pool)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def train_variant(spark, corpus, cfg, name: str, warm: WarmStart | None) -> tuple[item2vec.Trained, dict]:
    """Train one variant; its training CPU and wall seconds, and the whole call's (with the
    ensemble pool's process start-up: spawn and imports)."""
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    if name.startswith("ensemble"):
        trained = item2vec.train_ensemble(spark, corpus, dataclasses.replace(
            cfg, ensemble_size=int(name.removeprefix("ensemble")), ensemble_runner="local"))
    else:
        trained = item2vec.train_single(corpus, cfg, warm)
    return trained, {"train_cpu_seconds": trained.cpu_seconds, "train_wall_seconds": trained.seconds,
                     "call_cpu_seconds": cpu_seconds() - cpu0, "call_wall_seconds": time.perf_counter() - wall0}


def ppmi_settings(name: str) -> dict:
    """``ppmi_svd_dims128`` -> {"vector_size": 128}: the trainer settings a ppmi_svd variant
    changes from PPMI ({} for ``ppmi_svd``)."""
    rest = name.removeprefix("ppmi_svd")
    if not rest:
        return {}
    key = next((k for k in PPMI_SETTINGS if rest.startswith("_" + k)), None)
    if key is None:
        raise ValueError(f"variant {name}: unknown setting; known: ppmi_svd_<{'|'.join(PPMI_SETTINGS)}><value>")
    field = PPMI_SETTINGS[key]
    kind = type(getattr(TrainConfig(), field))
    try:
        settings = {field: kind(rest.removeprefix("_" + key))}
        dataclasses.replace(TrainConfig(), **{**PPMI, **settings})  # the config's own checks
    except (ValueError, ConfigError) as e:
        raise ValueError(f"variant {name}: {e}") from None
    return settings


def ppmi_config(cfg: TrainConfig, name: str = "ppmi_svd") -> TrainConfig:
    """The trainer config of ppmi_svd variant ``name``: PPMI and the variant's setting over ``cfg``."""
    return dataclasses.replace(cfg, **{**PPMI, **ppmi_settings(name)})


def train_ppmi_svd(train_df, cfg, name: str = "ppmi_svd") -> tuple[tuple, dict]:
    """The ppmi_svd trainer on Spark: (ids, counts, item, context) in numpy and its times."""
    wall0 = time.perf_counter()
    result = ppmi_svd.train(train_df, ppmi_config(cfg, name))
    ids, item = evaluate.vectors_to_numpy(result.item_df)
    counts = dict(result.item_df.select("id", "count").collect())
    context_ids, context = evaluate.vectors_to_numpy(result.context_df)
    pos = {i: n for n, i in enumerate(context_ids)}
    context = context[[pos[i] for i in ids]]
    spark_passes.release(result.cached)  # else every training's frames stay cached, filling the memory
    meta = result.meta
    times = {"train_cpu_seconds": meta["train_cpu_seconds"], "train_wall_seconds": meta["train_seconds"],
             "call_cpu_seconds": meta["train_cpu_seconds"], "call_wall_seconds": time.perf_counter() - wall0,
             "phases": {k: v for k, v in meta.items() if k.startswith("phase_")}}
    return (ids, np.array([counts[i] for i in ids]), item, context), times


def linalg_frame(item: np.ndarray, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The canonical pair of (item, context): what the stabilize step publishes for a root."""
    canon = linalg.canonical_pair_transforms(item, context)
    return item.astype(np.float64) @ canon.m_t, context.astype(np.float64) @ canon.m_w


def publish(ids: np.ndarray, counts: np.ndarray, item: np.ndarray, context: np.ndarray, parent,
            beta: float = 1.0) -> tuple[np.ndarray, dict]:
    """Stabilize as the step does (mode canonicalize_align): canonicalize, then rotate onto the
    parent's published vectors over the shared ids, then (``beta`` < 1, stabilize.smoothing)
    publish beta * aligned + (1 - beta) * parent for the shared ids; the figures compare the
    published vectors with the parent's."""
    t, _ = linalg_frame(item, context)
    if parent is None:
        return t, {}
    p_ids, p_vec = parent
    pos = {i: n for n, i in enumerate(p_ids)}
    rows = np.array([(n, pos[i]) for n, i in enumerate(ids) if i in pos])
    b = p_vec[rows[:, 1]]
    o = linalg.procrustes_rotation(t[rows[:, 0]].T @ b)
    t = t @ o
    if beta < 1.0:
        t[rows[:, 0]] = linalg.smoothed(t[rows[:, 0]], b, beta)
    a = t[rows[:, 0]]
    cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    figures = {"stabilized_cosine": float(cos.mean()), "shared_ids": int(len(a))}
    weights = counts[rows[:, 0]].astype(np.float64)
    for draw, p in (("", weights / weights.sum()), ("uniform_", None)):
        queries = np.sort(np.random.default_rng(0).choice(len(a), min(QUERIES, len(a)), replace=False, p=p))
        na, nb = knn.nearest_neighbors(a, queries, K), knn.nearest_neighbors(b, queries, K)
        overlap = knn.shared_share(na, nb)
        figures[f"{draw}overlap_at_10"] = float(overlap.mean())
        figures[f"{draw}churn_share"] = float(np.mean(overlap < 0.5))
    return t, figures


def smoothing_of(name: str) -> tuple[str, float]:
    """``ppmi_svd_smooth0.5`` -> ("ppmi_svd", 0.5): the trained variant and stabilize.smoothing."""
    base, _, beta = name.partition("_smooth")
    return base, float(beta) if beta else 1.0


def holdout_for(seq_df, cut: _dt.datetime) -> evaluate.HoldOut:
    train_df = seq_df.where(F.col("start_ts") < F.lit(cut))
    test_df = seq_df.where((F.col("start_ts") >= F.lit(cut)) &
                           (F.col("start_ts") < F.lit(cut + _dt.timedelta(days=HORIZON_DAYS))))
    vocab_df = train_df.select(F.explode("items").alias("id")).distinct()
    table = evaluate.held_out_pairs(test_df, vocab_df, 0).toArrow()
    counts = (train_df.select(F.explode("items").alias("id")).groupBy("id").count()
              .orderBy(F.desc("count"), "id").limit(K + 1).collect())
    return evaluate.HoldOut(train_df, np.array(table["query"].to_pylist(), dtype=object),
                            np.array(table["target"].to_pylist(), dtype=object),
                            np.array([r.id for r in counts], dtype=object), cut.isoformat())


def train_chain_variant(spark, corpus, holdout, cut_date, cfg, name, state) -> tuple[tuple, dict]:
    """One variant's training for one version: (ids, counts, item, context) and its times."""
    if name.startswith("ppmi_svd"):
        return train_ppmi_svd(holdout.train_df, cfg, name)
    init = None
    if name.startswith("warm"):
        every = 84 if name == "warm_cold84" else 0
        last = state["cold_dt"].get(name)
        fresh = last is None or (every and (cut_date - _dt.date.fromisoformat(last)).days >= every)
        init = None if fresh else state["warm_raw"][name]
        if init is not None:
            init.cold_dt = last
        cfg = dataclasses.replace(cfg, **WARM)
    trained, times = train_variant(spark, corpus, cfg, name, init)
    ids = np.array([urllib.parse.unquote_plus(k) for k in trained.keys], dtype=object)
    if name.startswith("warm"):
        dt = cut_date.isoformat()
        state["warm_raw"][name] = WarmStart(dt, ids, trained.item, trained.context, dt)
        state["cold_dt"][name] = dt if init is None else state["cold_dt"][name]
    times["init"] = "warm" if init is not None else "cold"
    return (ids, trained.counts, trained.item, trained.context), times


def run_chain(spark, seq_df, cfg, versions: int, variants: tuple, on_version=None) -> dict:
    per_version = []
    parents: dict[str, tuple | None] = dict.fromkeys(variants)
    state = {"warm_raw": {}, "cold_dt": {}}
    same_data = None
    with tempfile.TemporaryDirectory(prefix="bench-churn-") as tmp:
        for v in range(versions):
            cut = FIRST_CUT + _dt.timedelta(days=STEP_DAYS * v)
            dt = cut.date().isoformat()
            holdout = holdout_for(seq_df, cut)
            corpus = item2vec.export_corpus(holdout.train_df, Path(tmp) / f"corpus-{dt}.txt")
            row = {"version": v, "cut": dt, "test_pairs": len(holdout.queries)}
            trained = {}  # a smoothed variant publishes its base variant's training
            for name in variants:
                base, beta = smoothing_of(name)
                if base not in trained:
                    trained[base] = train_chain_variant(spark, corpus, holdout, cut.date(), cfg, base, state)
                (ids, counts, item, context), times = trained[base]
                published, figures = publish(ids, counts, item, context, parents[name], beta)
                metrics = evaluate.next_item_metrics(ids, published, holdout, K)
                if name == "ppmi_svd" and v == 1:
                    (ids2, counts2, item2, context2), _ = train_ppmi_svd(holdout.train_df, cfg)
                    same_data = publish(ids2, counts2, item2, context2, (ids, published))[1]
                parents[name] = (ids, published)
                row[name] = {**figures, **times, "hr_at_10": metrics["hr"], "ndcg_at_10": metrics["ndcg"],
                             "items": len(ids)}
                log.info("version %d (%s) %s: %s", v, dt, name, {k: round(x, 4) if isinstance(x, float) else x
                                                               for k, x in row[name].items()})
            row["popularity_hr_at_10"] = metrics["popularity_hr"]
            per_version.append(row)
            out = summarize(per_version, variants) if v else None
            if same_data is not None:
                out["same_data_overlap_ppmi_svd"] = same_data["overlap_at_10"]
                out["same_data_overlap_uniform_ppmi_svd"] = same_data["uniform_overlap_at_10"]
            if out and on_version:
                on_version(out)
    return out


def summarize(rows: list[dict], variants: tuple = VARIANTS) -> dict:
    with_parent = rows[1:]

    def chain_mean(name, key):
        return float(np.mean([r[name][key] for r in with_parent]))

    def paired(name, key="hr_at_10"):
        return float(np.mean([r[name][key] / r["single"][key] for r in rows]))

    def cpu(name, key="train_cpu_seconds"):
        return sum(r[name][key] for r in rows)

    out = {"versions": rows, "variants": list(variants), "first_cut": rows[0]["cut"], "step_days": STEP_DAYS,
           "horizon_days": HORIZON_DAYS, "queries": QUERIES, "warm_settings": WARM}
    for label in variants:
        name = label
        out[f"overlap_{label}"] = chain_mean(name, "overlap_at_10")
        out[f"churn_share_{label}"] = chain_mean(name, "churn_share")
        out[f"overlap_uniform_{label}"] = chain_mean(name, "uniform_overlap_at_10")
        out[f"churn_share_uniform_{label}"] = chain_mean(name, "uniform_churn_share")
        out[f"stabilized_cosine_{label}"] = chain_mean(name, "stabilized_cosine")
        out[f"hr_mean_{label}"] = float(np.mean([r[name]["hr_at_10"] for r in rows]))
        out[f"ndcg_mean_{label}"] = float(np.mean([r[name]["ndcg_at_10"] for r in rows]))
        if name != "single":
            out[f"hr_ratio_{label}_vs_single"] = paired(name)
            out[f"ndcg_ratio_{label}_vs_single"] = paired(name, "ndcg_at_10")
            out[f"train_cpu_ratio_{label}"] = cpu(name) / cpu("single")
            out[f"train_wall_ratio_{label}"] = cpu(name, "train_wall_seconds") / cpu("single", "train_wall_seconds")
            out[f"call_cpu_ratio_{label}"] = cpu(name, "call_cpu_seconds") / cpu("single", "call_cpu_seconds")
    for name in ("warm", "warm_cold84"):
        if name in variants:
            out[f"{name}_hr_ratio_last_version"] = rows[-1][name]["hr_at_10"] / rows[-1]["single"]["hr_at_10"]
    out["test_pairs_total"] = sum(r["test_pairs"] for r in rows)
    shippable = [v for v in variants if v != "single" and out[f"hr_ratio_{v}_vs_single"] >= BEST_MIN_HR_RATIO]
    if shippable:
        best = max(shippable, key=lambda v: out[f"overlap_{v}"])
        out.update(best_overlap_variant=best, best_overlap=out[f"overlap_{best}"],
                   best_overlap_hr_ratio=out[f"hr_ratio_{best}_vs_single"], best_min_hr_ratio=BEST_MIN_HR_RATIO)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated, single first (the ratios are to it); default: all")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="results name (benchmarks/results/<out>.json); default bench_churn for "
                        "all the variants, bench_churn_<variants> for a subset")
    parser.add_argument("--settings", action="store_true", help="the ppmi_svd settings run: --variants "
                        f"{','.join(PPMI_SETTING_VARIANTS)} --out bench_churn_ppmi_settings, "
                        "spark.driver_memory=8g (--versions 6 in the committed run)")
    args = parser.parse_args(argv)
    if args.settings:
        if args.variants != ",".join(VARIANTS):
            parser.error("--settings runs its own variants: leave out --variants")
        args.variants, args.out = ",".join(PPMI_SETTING_VARIANTS), args.out or "bench_churn_ppmi_settings"
    if args.versions < 2:
        parser.error("--versions must be at least 2: the figures compare each version with its parent")
    variants = tuple(args.variants.split(","))
    for variant in (v for v in variants if v.startswith("ppmi_svd")):
        try:
            ppmi_settings(smoothing_of(variant)[0])
        except ValueError as e:
            parser.error(str(e))
    started = time.perf_counter()
    # --settings trains six ppmi_svd variants per version in one driver: with conf/movielens.yaml's
    # driver memory it ran out building a broadcast at the second version.
    memory = ["spark.driver_memory=8g"] if args.settings else []
    loaded = movielens_sequences("bench_churn", ["spark.master=local[2]", "train.ensemble_size=1",
                                                 "train.init=cold", *memory, *args.overrides])
    if loaded is None:
        return {}
    cfg, spark, seq_df = loaded  # the log read once
    name = args.out or ("bench_churn" if variants == VARIANTS else "bench_churn_" + "_".join(variants))

    def written(results):  # after every version: a run cut short keeps the versions it finished
        results["train"] = {k: v for k, v in vars(cfg.train).items() if k != "corpus_dir"}
        results["ppmi_settings"] = {v: {**PPMI, **ppmi_settings(smoothing_of(v)[0])}
                                    for v in variants if v.startswith("ppmi_svd")}
        results["seconds"] = time.perf_counter() - started
        results["versions_requested"] = args.versions
        return write_results(name, results)

    results = run_chain(spark, seq_df, cfg.train, args.versions, variants, written)
    spark.stop()
    return written(results)


if __name__ == "__main__":
    main()
