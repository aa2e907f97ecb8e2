"""The ppmi_svd trainer (issue 23): quality on MovieLens, a parameter sweep, speed against gensim.

1. MovieLens (../shared/data/movielens-latest-small, conf/movielens.yaml's sequences and
   hold-out, as bench_train): HR@10 of the co-occurrence kNN baseline (a query's 10 most
   co-occurring items within 5 positions, no embedding), of ppmi_svd with its defaults
   (window 5, no smoothing, no shift, 64 dimensions, p = 1), of gensim with bench_train's
   tuned parameters, and a sweep of ppmi_svd's parameters (window, smoothing, shift,
   eigen_weight, dimensions), one changed at a time from the defaults.
2. Speed: the whole trainer call (gensim: corpus export, vocabulary, training; ppmi_svd:
   counts, PPMI, every range-finder pass, the small SVD) on a generated log and on the same
   sequences repeated ``--scale`` times under renamed users (bench_train's scaled copy: 4x
   the events and pairs, the same items, so the SVD's size does not grow), with ppmi_svd's
   phases. The generated log is smaller than bench_train's (``--events``) to fit a shared
   machine; the load average is recorded.

3. Quality on the generated log: HR@10 of gensim (bench_train's settings), ppmi_svd and the
   co-occurrence kNN baseline on its temporal hold-out, the same pairs for the three.

Writes benchmarks/results/bench_ppmi_svd.json; ``--sections`` runs a subset and keeps the
other sections of that file as they were.
MovieLens runs first, then the speed runs, then the sweep; the results file is written after
each measurement, so a run cut short keeps what it measured.
Usage: .venv/bin/python benchmarks/bench_ppmi_svd.py [--events 1000000] [--scale 4] [--no-sweep]
       [--sections movielens,speed,generated_quality,sweep]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import threading
import time
from pathlib import Path

from bench_train import (
    DEFAULT,
    GEN_DT,
    ML_DT,
    MOVIELENS,
    TUNED,
    WORK,
    ensure_generated,
    ensure_scaled,
    generated_config,
    sample_load,
    spark_overrides,
    with_train,
)
from common import RESULTS, write_results

from embedlib import trainers
from embedlib.config import load_config
from embedlib.evaluate import cooccurrence_metrics, evaluate_holdout, temporal_holdout
from embedlib.spark import get_spark
from embedlib.steps import build_sequences, train_item2vec

REPO = Path(__file__).resolve().parents[1]
PPMI = dict(trainer="ppmi_svd", vector_size=64, window=5, ppmi_smoothing=1.0, ppmi_shift=1.0,
            eigen_weight=1.0, min_count=1)
SECTIONS = ("movielens", "speed", "generated_quality", "sweep")
SWEEP = (("window", 10), ("ppmi_smoothing", 0.75), ("ppmi_shift", 2.0), ("eigen_weight", 0.5),
         ("vector_size", 128), ("window", 2), ("vector_size", 32))


def movielens_holdout(spark, work: Path, build: bool):
    cfg = load_config(REPO / "conf" / "movielens.yaml",
                      spark_overrides(work) + ["tables.database=bench_movielens", "evaluate.cooccurrence_window=0"])
    if build:
        build_sequences.run(spark, cfg, ML_DT)
    return cfg, temporal_holdout(train_item2vec.extract(spark, cfg, ML_DT), cfg.evaluate)


def movielens(spark, work: Path) -> dict:
    cfg, holdout = movielens_holdout(spark, work, True)
    out = {"cooccurrence": cooccurrence_metrics(spark, holdout, 5, cfg.evaluate.k),
           "ppmi_svd": evaluate_holdout(spark, holdout, with_train(cfg, **PPMI), "ml-ppmi"),
           "gensim_tuned": evaluate_holdout(spark, holdout, with_train(cfg, **TUNED, ensemble_size=1),
                                            "ml-tuned")}
    return out


def sweep(spark, work: Path) -> list:
    cfg, holdout = movielens_holdout(spark, work, False)
    return [{"param": key, "value": value, **evaluate_holdout(
        spark, holdout, with_train(cfg, **{**PPMI, key: value}), "ml-sweep")} for key, value in SWEEP]


def timed_train(spark, cfg) -> dict:
    """One trainer call on the dt's sequences: wall seconds and the trainer's figures."""
    sequences_df = train_item2vec.extract(spark, cfg, GEN_DT)
    started = time.perf_counter()
    result = trainers.train(spark, sequences_df, cfg.train, corpus_name="speed")
    result.item_df.count()
    meta = result.meta
    return {"seconds": time.perf_counter() - started, "vocab_size": meta["vocab_size"],
            "corpus_tokens": meta["corpus_tokens"], "train_cpu_seconds": meta.get("train_cpu_seconds"),
            **{k: v for k, v in meta.items() if k.startswith("phase_") or k in ("cooccurrence_pairs", "sppmi_entries")}}


def speed(spark, work: Path, events: int, scale: int, out: dict, save) -> None:
    """Fills ``out`` (gensim_1x, ppmi_svd_1x, gensim_<s>x, ppmi_svd_<s>x), saving after each."""
    cfg, spec = generated_config(work, events, 1)
    out.update(events=events, sequences=ensure_generated(spark, cfg, spec, work))
    for label in ("1x", f"{scale}x"):
        run_cfg = cfg if label == "1x" else ensure_scaled(spark, cfg, scale)
        out[f"gensim_{label}"] = timed_train(spark, run_cfg)
        save()
        out[f"ppmi_svd_{label}"] = timed_train(spark, with_train(run_cfg, **PPMI))
        save()


def generated_quality(spark, work: Path, events: int) -> dict:
    """HR@10 on the generated log's temporal hold-out (bench_train's gensim settings): gensim,
    ppmi_svd and the co-occurrence kNN baseline, the same pairs for all three."""
    cfg, spec = generated_config(work, events, DEFAULT["epochs"])
    ensure_generated(spark, cfg, spec, work)
    holdout = temporal_holdout(train_item2vec.extract(spark, cfg, GEN_DT), cfg.evaluate)
    no_baseline = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, cooccurrence_window=0))
    return {"gensim": evaluate_holdout(spark, holdout, cfg, "gen-gensim"),
            "ppmi_svd": evaluate_holdout(spark, holdout, with_train(no_baseline, **PPMI), "gen-ppmi")}


def headline(ml: dict | None, gen: dict, s: int) -> dict:
    """The keys the issue asks for, copied from the sections measured so far."""
    out = {}
    for label in ("1x", f"{s}x"):
        if f"ppmi_svd_{label}" in gen:
            suffix = "" if label == "1x" else f"_{label}"
            out[f"ppmi_svd_vs_gensim_train_seconds{suffix}"] = (gen[f"ppmi_svd_{label}"]["seconds"]
                                                                / gen[f"gensim_{label}"]["seconds"])
    if f"ppmi_svd_{s}x" in gen:
        for t in ("ppmi_svd", "gensim"):
            out[f"{t}_time_growth_1x_to_{s}x"] = gen[f"{t}_{s}x"]["seconds"] / gen[f"{t}_1x"]["seconds"]
    if ml:
        out.update(movielens_hr10_cooccurrence=ml["cooccurrence"]["cooccurrence_hr"],
                   movielens_hr10_ppmi_svd=ml["ppmi_svd"]["hr"], movielens_hr10_gensim_tuned=ml["gensim_tuned"]["hr"],
                   movielens_hr10_popularity=ml["ppmi_svd"]["popularity_hr"])
        out["movielens_ppmi_svd_vs_cooccurrence"] = out["movielens_hr10_ppmi_svd"] / out["movielens_hr10_cooccurrence"]
    quality = gen.get("quality")
    if quality:
        out.update(generated_hr10_cooccurrence=quality["gensim"]["cooccurrence_hr"],
                   generated_hr10_gensim=quality["gensim"]["hr"], generated_hr10_ppmi_svd=quality["ppmi_svd"]["hr"])
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--work", type=Path, default=WORK.with_name("bench_ppmi_svd"))
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma-separated subset of %(default)s; a subset keeps the other sections of "
                             "the results file as they are")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    if not sections <= set(SECTIONS):
        parser.error(f"--sections: unknown {sorted(sections - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
    os.chdir(REPO)
    args.work.mkdir(parents=True, exist_ok=True)
    loads, done = [os.getloadavg()[0]], threading.Event()
    threading.Thread(target=sample_load, args=(loads, done), daemon=True).start()
    started = time.perf_counter()
    spark = get_spark(load_config(REPO / "conf" / "local.yaml", spark_overrides(args.work)).spark, "bench_ppmi_svd")
    out = {"params": PPMI, "scale": args.scale, "generated": {}, "movielens": None}
    kept = RESULTS / "bench_ppmi_svd.json"
    if sections != set(SECTIONS) and kept.exists():
        previous = json.loads(kept.read_text())
        out.update({k: previous[k] for k in ("generated", "movielens", "scale") if previous.get(k) is not None})
        loads[:0] = previous.get("load_average_1m_samples", [])  # the kept sections' load too

    def save():  # after each measurement, so that a run cut short keeps what it measured
        return write_results("bench_ppmi_svd", {
            **out, **headline(out["movielens"], out["generated"], args.scale),
            "bench_seconds": time.perf_counter() - started, "load_average_1m_max": max(loads),
            "load_average_1m_samples": loads})

    if "movielens" in sections and (MOVIELENS / "ratings.csv").exists():
        out["movielens"] = movielens(spark, args.work)
        save()
    if "speed" in sections:
        speed(spark, args.work, args.events, args.scale, out["generated"], save)
    if "generated_quality" in sections:
        out["generated"]["quality"] = generated_quality(spark, args.work, args.events)
        save()
    if "sweep" in sections and out["movielens"] and not args.no_sweep:
        out["movielens"]["sweep"] = sweep(spark, args.work)
    done.set()
    return save()


if __name__ == "__main__":
    main()
