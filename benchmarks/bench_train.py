"""Training benchmarks (issue 3): pipeline overhead, gensim vs Spark MLlib, worker scaling.

1. Pipeline overhead: the train_item2vec job's training words/s against raw gensim
   (gensim.models.Word2Vec, nothing of embedlib) on the same corpus file with the same
   parameters; the export from Spark is timed separately.
2. gensim vs Spark MLlib on MovieLens (if ../shared/data has it) and on a generated log
   of at least 10M tokens: wall time and HR@10 on the same temporal hold-out. MovieLens
   also gets default and tuned gensim parameters and the popularity baseline.
3. Scaling: raw gensim words/s with 1 and 2 workers on the generated corpus.

Prints one JSON object on the last line and writes it to benchmarks/results/bench_train.json.
Work files (generated log, warehouse, corpus) go under benchmarks/work/bench_train.
Usage: .venv/bin/python benchmarks/bench_train.py [--events N] [--gen-epochs E]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import gensim

from common import write_results  # benchmarks/, next to this file
from embedlib import tables
from embedlib.config import Config, load_config
from embedlib.evaluate import evaluate_holdout, temporal_holdout
from embedlib.sample_data import SampleSpec, write_sample
from embedlib.spark import get_spark
from embedlib.steps import build_sequences, train_item2vec

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work" / "bench_train"
MOVIELENS = REPO.parent / "shared" / "data" / "movielens-latest-small"
ML_DT, GEN_DT = "2018-09-24", "2024-01-10"
# word2vec's skip-gram defaults (TrainConfig's defaults), and the tuned set for MovieLens
# (Caselles-Dupre et al. 2018: a wider window, stronger down-sampling, more epochs).
DEFAULT = dict(vector_size=64, window=5, negative=5, ns_exponent=0.75, sample=1e-3, epochs=5,
               alpha=0.025)
TUNED = dict(vector_size=32, window=20, negative=5, ns_exponent=0.75, sample=1e-4, epochs=10,
             alpha=0.025)
SPARK = dict(DEFAULT, trainer="spark", spark_partitions=1)


def with_train(cfg: Config, **params) -> Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **params))


def spark_overrides() -> list[str]:
    warehouse = WORK / "warehouse"
    return [f"spark.warehouse_dir={warehouse}", f"spark.metastore_dir={warehouse}/metastore_db",
            "spark.master=local[2]", "spark.driver_memory=8g", "train.workers=2",
            f"train.corpus_dir={WORK / 'corpus'}"]


def movielens(spark) -> dict:
    """Default, tuned and Spark MLlib runs on one MovieLens hold-out."""
    cfg = load_config(REPO / "conf" / "movielens.yaml",
                      spark_overrides() + ["tables.database=bench_movielens"])
    build_sequences.run(spark, cfg, ML_DT)
    holdout = temporal_holdout(train_item2vec.extract(spark, cfg, ML_DT), cfg.evaluate)
    return {name: evaluate_holdout(spark, holdout, with_train(cfg, **params), f"ml-{name}")
            for name, params in (("default", DEFAULT), ("tuned", TUNED), ("spark", SPARK))}


def generated_config(n_events: int, epochs: int) -> tuple[Config, SampleSpec]:
    spec = SampleSpec(n_events=n_events, n_users=50_000, n_items=20_000, n_clusters=50)
    cfg = load_config(REPO / "conf" / "local.yaml", spark_overrides() + [
        f"input.path={WORK / 'gen' / 'events'}", "tables.database=bench_generated",
        "sequences.lookback_days=10", "sequences.now=2024-01-11T00:00:00",
        f"evaluate.clusters_path={WORK / 'gen' / 'items.csv'}",
        *(f"train.{k}={v}" for k, v in DEFAULT.items()), f"train.epochs={epochs}"])
    return cfg, spec


def ensure_generated(spark, cfg: Config, spec: SampleSpec) -> dict:
    """Generate the log and its sequences once per spec (kept under WORK between runs)."""
    marker = WORK / "gen" / "spec.json"
    wanted = json.dumps(dataclasses.asdict(spec), sort_keys=True)
    seq_table = tables.qualified(cfg.tables, cfg.tables.sequences)
    if marker.exists() and marker.read_text() == wanted and \
            GEN_DT in tables.list_partitions(spark, seq_table):
        return {"reused": True}
    started = time.perf_counter()
    write_sample(spec, WORK / "gen")
    generated = time.perf_counter() - started
    summary = build_sequences.run(spark, cfg, GEN_DT)
    marker.write_text(wanted)
    return {"generate_seconds": generated, "build_sequences_seconds":
            time.perf_counter() - started - generated, "tokens": summary["sequences"]["tokens"]}


def raw_gensim(corpus_file: Path, cfg: Config, workers: int, epochs: int) -> dict:
    """gensim alone on ``corpus_file``: training words/s (raw tokens x epochs / seconds)."""
    t = cfg.train
    model = gensim.models.Word2Vec(
        vector_size=t.vector_size, window=t.window, negative=t.negative, ns_exponent=t.ns_exponent,
        sample=t.sample, min_count=t.min_count, sg=t.sg, alpha=t.alpha, min_alpha=t.min_alpha,
        workers=workers, seed=t.seed)
    model.build_vocab(corpus_file=str(corpus_file))
    started = time.perf_counter()
    model.train(corpus_file=str(corpus_file), total_words=model.corpus_total_words, epochs=epochs)
    seconds = time.perf_counter() - started
    return {"workers": workers, "epochs": epochs, "train_seconds": seconds,
            "words_per_second": model.corpus_total_words * epochs / seconds}


def generated(spark, n_events: int, epochs: int) -> dict:
    cfg, spec = generated_config(n_events, epochs)
    out = {"spec": dataclasses.asdict(spec), "sequences": ensure_generated(spark, cfg, spec)}
    job = train_item2vec.run(spark, cfg, GEN_DT)
    corpus_file = Path(cfg.train.corpus_dir) / f"corpus-{GEN_DT}.txt"
    raw = raw_gensim(corpus_file, cfg, cfg.train.workers, cfg.train.epochs)
    out["job"] = {k: job[k] for k in ("corpus_tokens", "corpus_sequences", "vocab_size",
                                      "export_seconds", "train_seconds", "words_per_second")}
    out["raw_gensim"] = raw
    out["scaling"] = [raw_gensim(corpus_file, cfg, workers, 1) for workers in (1, 2)]
    holdout = temporal_holdout(train_item2vec.extract(spark, cfg, GEN_DT), cfg.evaluate)
    out["gensim"] = evaluate_holdout(spark, holdout, cfg, "gen-gensim")
    out["spark"] = evaluate_holdout(
        spark, holdout, with_train(cfg, trainer="spark", spark_partitions=2), "gen-spark")
    return out


def headline(ml: dict | None, gen: dict) -> dict:
    """The keys the issue asks for, copied from the sections."""
    scaling = {f"scaling_words_per_s_{s['workers']}_workers": s["words_per_second"]
               for s in gen["scaling"]}
    out = {
        "job_vs_raw_gensim_words_per_s": gen["job"]["words_per_second"]
        / gen["raw_gensim"]["words_per_second"],
        "gensim_vs_spark_speedup": gen["spark"]["wall_seconds"] / gen["gensim"]["wall_seconds"],
        "generated_tokens": gen["job"]["corpus_tokens"],
        "generated_hr10_gensim": gen["gensim"]["hr"], "generated_hr10_spark": gen["spark"]["hr"],
        "generated_hr10_popularity": gen["gensim"]["popularity_hr"],
        "generated_purity_gensim": gen["gensim"]["cluster_purity"],
        "generated_purity_spark": gen["spark"]["cluster_purity"],
        "export_seconds": gen["job"]["export_seconds"], **scaling,
        "scaling_2_vs_1_workers": scaling["scaling_words_per_s_2_workers"]
        / scaling["scaling_words_per_s_1_workers"],
    }
    keys = ("movielens_hr10_popularity", "movielens_hr10_default", "movielens_hr10_tuned",
            "movielens_hr10_spark", "movielens_test_pairs", "movielens_tuned_vs_popularity",
            "movielens_gensim_vs_spark_speedup")
    values = [None] * len(keys) if ml is None else [
        ml["default"]["popularity_hr"], ml["default"]["hr"], ml["tuned"]["hr"], ml["spark"]["hr"],
        ml["default"]["test_pairs"], ml["tuned"]["hr"] / ml["default"]["popularity_hr"],
        ml["spark"]["wall_seconds"] / ml["default"]["wall_seconds"]]
    return {**out, **dict(zip(keys, values))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=12_500_000,
                        help="events of the generated log (12.5M gives about 10.5M tokens)")
    parser.add_argument("--gen-epochs", type=int, default=1, help="epochs on the generated corpus")
    args = parser.parse_args()
    os.chdir(REPO)  # the configs' relative paths resolve against the repository root
    WORK.mkdir(parents=True, exist_ok=True)
    spark = get_spark(load_config(REPO / "conf" / "local.yaml", spark_overrides()).spark,
                      "bench_train")
    started = time.perf_counter()
    ml = movielens(spark) if (MOVIELENS / "ratings.csv").exists() else None
    gen = generated(spark, args.events, args.gen_epochs)
    result = {**headline(ml, gen), "spark_master": "local[2]", "params": {
        "default": DEFAULT, "tuned": TUNED, "spark": SPARK,
        "generated": {**DEFAULT, "epochs": args.gen_epochs, "spark_partitions": 2}},
        "movielens": ml, "generated": gen, "bench_seconds": time.perf_counter() - started}
    write_results("bench_train", result)


if __name__ == "__main__":
    main()
