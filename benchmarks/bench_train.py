"""Training benchmarks (issues 3, 18 and 23): the step against raw gensim, the trainers' quality.

1. The step against raw gensim (issue 18): the train_item2vec job (corpus export, then
   gensim training) against raw gensim (gensim.models.Word2Vec, nothing of embedlib) on
   the same corpus file, with the same parameters, in the same process. Job and raw runs
   alternate (job, raw, raw, job, ...) so that a change of load on the machine hits both;
   each side's best run counts. Each training records its CPU seconds (this process, i.e.
   gensim's threads) and the job's also the CPU seconds of Spark's JVM around it, so a
   slower job shows whether it did more work or got less CPU. The same at ``--scale`` times
   the tokens (the generated sequences repeated under renamed users), for the export's growth.
   The export's phases at 1x: the same plans sunk into Spark's ``noop`` writer cumulatively
   (read, + shuffle and sort, + encoded lines), the text write, the join of the parts, and
   two global-sort plans for comparison (the plan before issue 18's change, and a global
   sort with the cheap empty-line filter).
2. gensim, Spark MLlib and ppmi_svd on MovieLens (if ../shared/data has it) and on a
   generated log of at least 10M tokens: wall time and HR@10 on the same temporal hold-out,
   next to the popularity baseline and the baseline a user tries first, the item
   co-occurrence kNN (a query's 10 most co-occurring items within 5 positions, no
   embedding). MovieLens also gets default and tuned gensim parameters and a sweep of
   ppmi_svd's parameters (window, context smoothing, shift, eigen_weight, dimensions), one
   changed at a time from its defaults (``--no-sweep`` skips it). ppmi_svd's speed against
   gensim at this log's size and 4x is bench_ppmi_svd's (the same generated log).
3. Scaling: raw gensim words/s with 1 and 2 workers on the generated corpus.
4. The export's line order (users by hash partition) against a global sort's: HR@10 of raw
   gensim on the generated hold-out's training corpus written both ways, several seeds each.

Prints one JSON object on the last line and writes it to benchmarks/results/bench_train.json
(load averages at start and end included: run it alone). Work files (generated log,
warehouse, corpus) go under --work. ``make docs`` (scripts/render_docs.py) renders the
figures in docs/benchmarks.md from the results file.
Usage: .venv/bin/python benchmarks/bench_train.py [--events N] [--quick] [--no-sweep]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import threading
import time
import urllib.parse
from pathlib import Path

import gensim
import numpy as np
from common import PPMI, machine, write_results  # benchmarks/, next to this file
from pyspark.sql import functions as F

from embedlib import item2vec, tables
from embedlib.config import Config, load_config
from embedlib.evaluate import cooccurrence_metrics, evaluate_holdout, next_item_metrics, temporal_holdout
from embedlib.sample_data import SampleSpec, write_sample
from embedlib.spark import get_spark
from embedlib.steps import build_sequences, train_item2vec

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work" / "bench_train"
MOVIELENS = REPO.parent / "shared" / "data" / "movielens-latest-small"
ML_DT, GEN_DT = "2018-09-24", "2024-01-10"
# word2vec's skip-gram defaults (TrainConfig's defaults), and the tuned set for MovieLens
# (Caselles-Dupre et al. 2018: a wider window, stronger down-sampling, more epochs).
# gensim's settings (conf/local.yaml's own trainer is ppmi_svd): the defaults and the tuned ones.
DEFAULT = dict(trainer="gensim", vector_size=64, window=5, negative=5, ns_exponent=0.75, sample=1e-3,
               epochs=5, alpha=0.025)
TUNED = dict(trainer="gensim", vector_size=32, window=20, negative=5, ns_exponent=0.75, sample=1e-4,
             epochs=10, alpha=0.025)
SPARK = dict(DEFAULT, trainer="spark", spark_partitions=1)
# ppmi_svd's parameters changed one at a time from PPMI on the MovieLens hold-out.
PPMI_SWEEP = (("window", 10), ("window", 2), ("ppmi_smoothing", 0.75), ("ppmi_shift", 2.0),
              ("eigen_weight", 0.5), ("vector_size", 128), ("vector_size", 32))
COOC_WINDOW = 5  # the co-occurrence kNN baseline's window (raw counts, no embedding)


def with_train(cfg: Config, **params) -> Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **params))


def spark_overrides(work: Path) -> list[str]:
    warehouse = work / "warehouse"
    # One model per training (the configs' default may be an ensemble): raw gensim trains one.
    return [f"spark.warehouse_dir={warehouse}", "spark.master=local[2]", "spark.driver_memory=8g", "train.workers=2",
            "train.ensemble_size=1", f"train.corpus_dir={work / 'corpus'}"]


def movielens(spark, work: Path, sweep: bool) -> dict:
    """Default, tuned and Spark MLlib runs, ppmi_svd (and its sweep) and the co-occurrence kNN
    baseline on one MovieLens hold-out."""
    cfg = load_config(REPO / "conf" / "movielens.yaml", spark_overrides(work) + [
        "tables.database=bench_movielens", "evaluate.cooccurrence_window=0"])  # the baseline once, below
    build_sequences.run(spark, cfg, ML_DT)
    holdout = temporal_holdout(train_item2vec.extract(spark, cfg, ML_DT), cfg.evaluate)
    out = {name: evaluate_holdout(spark, holdout, with_train(cfg, **params), f"ml-{name}")
           for name, params in (("default", DEFAULT), ("tuned", TUNED), ("spark", SPARK), ("ppmi_svd", PPMI))}
    out["cooccurrence"] = cooccurrence_metrics(spark, holdout, COOC_WINDOW, cfg.evaluate.k)
    if sweep:
        out["ppmi_svd_sweep"] = [{"param": key, "value": value, **evaluate_holdout(
            spark, holdout, with_train(cfg, **{**PPMI, key: value}), "ml-sweep")} for key, value in PPMI_SWEEP]
    return out


def generated_config(work: Path, n_events: int, epochs: int) -> tuple[Config, SampleSpec]:
    spec = SampleSpec(n_events=n_events, n_users=50_000, n_items=20_000, n_clusters=50)
    cfg = load_config(REPO / "conf" / "local.yaml", spark_overrides(work) + [
        f"input.path={work / 'gen' / 'events'}", "tables.database=bench_generated",
        "sequences.lookback_days=10", "sequences.now=2024-01-11T00:00:00",
        f"evaluate.clusters_path={work / 'gen' / 'items.csv'}", "evaluate.cooccurrence_window=0",
        *(f"train.{k}={v}" for k, v in DEFAULT.items()), f"train.epochs={epochs}"])
    return cfg, spec


def ensure_generated(spark, cfg: Config, spec: SampleSpec, work: Path) -> dict:
    """Generate the log and its sequences once per spec (kept under ``work`` between runs)."""
    marker = work / "gen" / "spec.json"
    wanted = json.dumps(dataclasses.asdict(spec), sort_keys=True)
    seq_table = tables.table_name(cfg.tables, "sequences")
    if marker.exists() and marker.read_text() == wanted and \
            GEN_DT in tables.list_partitions(spark, seq_table):
        return {"reused": True}
    started = time.perf_counter()
    write_sample(spec, work / "gen")
    generated = time.perf_counter() - started
    summary = build_sequences.run(spark, cfg, GEN_DT)
    marker.write_text(wanted)
    return {"generate_seconds": generated, "build_sequences_seconds":
            time.perf_counter() - started - generated, "tokens": summary["sequences"]["tokens"]}


def ensure_scaled(spark, cfg: Config, scale: int) -> Config:
    """The generated sequences ``scale`` times over, copy k's users and sessions renamed
    ``<id>#k``, in a database of their own (written once); its corpus in a folder of its own."""
    scaled = dataclasses.replace(
        with_train(cfg, corpus_dir=f"{cfg.train.corpus_dir}_x{scale}"),
        tables=dataclasses.replace(cfg.tables, database=f"{cfg.tables.database}_x{scale}"))
    seq_table = tables.table_name(scaled.tables, "sequences")
    # Made from the generated log the spec marker names: a regenerated log makes it again.
    spec, marker = Path(cfg.input.path).parent / "spec.json", Path(cfg.input.path).parent / f"scaled-x{scale}.json"
    if GEN_DT not in tables.list_partitions(spark, seq_table) or \
            not marker.exists() or marker.read_text() != spec.read_text():
        base_df = train_item2vec.extract(spark, cfg, GEN_DT)
        copies = [base_df.withColumns({name: F.concat(name, F.lit(f"#{k}"))
                                       for name in ("user_id", "session_id")})
                  for k in range(scale)]
        scaled_df = copies[0]
        for copy_df in copies[1:]:
            scaled_df = scaled_df.unionByName(copy_df)
        tables.write_partition(spark, scaled_df, seq_table, GEN_DT)
        marker.write_text(spec.read_text())
    return scaled


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def job_run(spark, cfg: Config) -> dict:
    """One train_item2vec run; the JVM's CPU seconds while gensim scans and trains."""
    jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    jvm_cpu = []
    train_file = item2vec.train_gensim_file

    def measured_train(*args, **kwargs):
        before = process_cpu_seconds(jvm_pid)
        try:
            return train_file(*args, **kwargs)
        finally:
            jvm_cpu.append(process_cpu_seconds(jvm_pid) - before)

    item2vec.train_gensim_file = measured_train  # train_gensim looks it up at call time
    started = time.perf_counter()
    try:
        job = train_item2vec.run(spark, cfg, GEN_DT)
    finally:
        item2vec.train_gensim_file = train_file
    tokens, seconds = job["corpus_tokens"], job["export_seconds"] + job["train_seconds"]
    return {**{k: job[k] for k in ("corpus_tokens", "corpus_sequences", "vocab_size",
                                   "export_seconds", "train_seconds", "train_cpu_seconds",
                                   "words_per_second")},
            "export_tokens_per_second": tokens / job["export_seconds"],
            "export_plus_train_seconds": seconds, "jvm_cpu_seconds_during_train": jvm_cpu[0],
            "step_wall_seconds": time.perf_counter() - started}  # + vocab scan, tables written


def raw_gensim(corpus_file: Path, cfg: Config, workers: int, epochs: int) -> dict:
    """gensim alone on ``corpus_file``: training words/s (raw tokens x epochs / seconds)."""
    return train_raw(corpus_file, cfg, workers, epochs)[1]


def train_raw(corpus_file: Path, cfg: Config, workers: int, epochs: int
              ) -> tuple[gensim.models.Word2Vec, dict]:
    """The raw gensim model trained on ``corpus_file`` and its timings."""
    t = cfg.train
    model = gensim.models.Word2Vec(
        vector_size=t.vector_size, window=t.window, negative=t.negative, ns_exponent=t.ns_exponent,
        sample=t.sample, min_count=t.min_count, sg=t.sg, alpha=t.alpha, min_alpha=t.min_alpha,
        workers=workers, seed=t.seed)
    started = time.perf_counter()
    model.build_vocab(corpus_file=str(corpus_file))
    vocab_seconds = time.perf_counter() - started
    started, cpu_started = time.perf_counter(), time.process_time()
    model.train(corpus_file=str(corpus_file), total_words=model.corpus_total_words, epochs=epochs)
    seconds = time.perf_counter() - started
    return model, {"workers": workers, "epochs": epochs, "vocab_seconds": vocab_seconds,
                   "train_seconds": seconds,
                   "train_cpu_seconds": time.process_time() - cpu_started, "vocab_size": len(model.wv),
                   "words_per_second": model.corpus_total_words * epochs / seconds}


def step_vs_raw(spark, cfg: Config, repeats: int) -> dict:
    """Job and raw gensim alternating (job, raw, raw, job, ...); the best run of each."""
    corpus_file = Path(cfg.train.corpus_dir) / f"corpus-{GEN_DT}.txt"
    jobs, raws = [], []
    for i in range(repeats):
        pair = (jobs, raws) if i % 2 == 0 else (raws, jobs)
        for runs in pair:
            runs.append(job_run(spark, cfg) if runs is jobs else
                        raw_gensim(corpus_file, cfg, cfg.train.workers, cfg.train.epochs))
    job = min(jobs, key=lambda r: r["train_seconds"])
    raw = min(raws, key=lambda r: r["train_seconds"])
    step = min(jobs, key=lambda r: r["export_plus_train_seconds"])
    return {"job_runs": jobs, "raw_runs": raws, "tokens": job["corpus_tokens"],
            "job_vs_raw_gensim_words_per_s": job["words_per_second"] / raw["words_per_second"],
            "job_vs_raw_gensim_cpu_seconds": job["train_cpu_seconds"] / raw["train_cpu_seconds"],
            "export_seconds": step["export_seconds"],
            "export_tokens_per_second": step["export_tokens_per_second"],
            "step_vs_raw_gensim_train": step["export_plus_train_seconds"] / raw["train_seconds"],
            "same_vocab_size": job["vocab_size"] == raw["vocab_size"]}


KEYS = ("user_id", "start_ts", "session_id")


def global_sort_lines(df, cheap_filter: bool):
    """A global (user, start, session) sort's lines: with ``cheap_filter=False`` the export's
    plan before issue 18's change (its filter on the encoded line was pushed below the sort)."""
    line = F.concat_ws(" ", F.transform("items", lambda x: F.url_encode(x))).alias("line")
    df = df.select(*KEYS, "items")
    if cheap_filter:
        return df.where(F.concat_ws(" ", "items") != "").orderBy(*KEYS).select(line)
    return df.orderBy(*KEYS).select(line).where(F.col("line") != "")


def export_phases(spark, cfg: Config, repeats: int) -> dict:
    """The export's phases on the generated sequences, each the best of ``repeats`` runs: the
    Spark part cumulatively into the ``noop`` sink (read; + hash shuffle and sort; + encoded
    lines), the text write of the parts, the join of the parts; and both global sorts."""
    df = train_item2vec.extract(spark, cfg, GEN_DT)
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    work = Path(cfg.train.corpus_dir) / "phases"
    shutil.rmtree(work, ignore_errors=True)

    def noop(frame):
        return lambda: frame.write.format("noop").mode("overwrite").save()

    def write(frame):
        def run():
            shutil.rmtree(work / "parts", ignore_errors=True)
            frame.write.option("compression", "none").text((work / "parts").resolve().as_uri())
        return run

    def join():
        item2vec.join_parts(work / "parts", work / "corpus.txt")

    def export(frame):
        return lambda: (write(frame)(), join())

    read = df.select(*KEYS, "items").where(F.concat_ws(" ", "items") != "")
    plans = {
        "read": noop(read),
        "read_shuffle_sort": noop(read.repartition(partitions, "user_id").sortWithinPartitions(*KEYS)),
        "read_shuffle_sort_lines": noop(item2vec.corpus_lines(df)),
        "write_parts": write(item2vec.corpus_lines(df)),
        "join_parts": join,  # the parts of write_parts, still there
        "global_sort_export": export(global_sort_lines(df, cheap_filter=True)),
        "previous_export": export(global_sort_lines(df, cheap_filter=False)),
    }
    best = {}
    for _ in range(repeats):
        for name, run in plans.items():
            started = time.perf_counter()
            run()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    shutil.rmtree(work)
    out = {f"{name}_seconds": seconds for name, seconds in best.items()}
    out.update(partitions=partitions, write_plus_join_seconds=best["write_parts"] + best["join_parts"])
    return out


def generated(spark, work: Path, args) -> dict:
    cfg, spec = generated_config(work, args.events, args.gen_epochs)
    out = {"spec": dataclasses.asdict(spec), "sequences": ensure_generated(spark, cfg, spec, work)}
    out["step"] = step_vs_raw(spark, cfg, args.repeats)
    out["export_phases"] = export_phases(spark, cfg, args.repeats)
    out[f"step_x{args.scale}"] = step_vs_raw(spark, ensure_scaled(spark, cfg, args.scale),
                                             args.scale_repeats)
    if args.quick:
        return out
    corpus_file = Path(cfg.train.corpus_dir) / f"corpus-{GEN_DT}.txt"
    out["scaling"] = [raw_gensim(corpus_file, cfg, workers, 1) for workers in (1, 2)]
    holdout = temporal_holdout(train_item2vec.extract(spark, cfg, GEN_DT), cfg.evaluate)
    out["gensim"] = evaluate_holdout(spark, holdout, cfg, "gen-gensim")
    out["spark"] = evaluate_holdout(
        spark, holdout, with_train(cfg, trainer="spark", spark_partitions=2), "gen-spark")
    out["ppmi_svd"] = evaluate_holdout(spark, holdout, with_train(cfg, **PPMI), "gen-ppmi")
    out["cooccurrence"] = cooccurrence_metrics(spark, holdout, COOC_WINDOW, cfg.evaluate.k)
    if args.order_seeds:
        out["order_check"] = order_check(spark, cfg, holdout, args.order_seeds)
    return out


def order_check(spark, cfg: Config, holdout, seeds: int) -> dict:
    """HR@10 of the export's line order against a global sort's: raw gensim (the generated
    parameters) on the hold-out's training corpus written both ways, seeds 1..``seeds``
    alternating between the two files. Both hold the same lines (checked); only their order
    differs, so the spread over seeds is the noise to judge the difference by."""
    folder = Path(cfg.train.corpus_dir)
    files = {"export": folder / "order-export.txt", "global_sort": folder / "order-global.txt"}
    item2vec.export_corpus(holdout.train_df, files["export"])
    parts = folder / "order-global.parts"
    shutil.rmtree(parts, ignore_errors=True)
    (global_sort_lines(holdout.train_df, cheap_filter=True).write.option("compression", "none")
     .text(parts.resolve().as_uri()))
    item2vec.join_parts(parts, files["global_sort"])
    shutil.rmtree(parts)
    lines = [sorted(path.read_bytes().split(b"\n")) for path in files.values()]
    hr, vocab = {name: [] for name in files}, {}
    for seed in range(1, seeds + 1):
        for name, path in files.items():
            model, _ = train_raw(path, with_train(cfg, seed=seed), cfg.train.workers, cfg.train.epochs)
            ids = np.array([urllib.parse.unquote_plus(k) for k in model.wv.index_to_key], dtype=object)
            vocab[name] = set(ids)
            hr[name].append(next_item_metrics(ids, model.wv.vectors, holdout, cfg.evaluate.k)["hr"])
    for path in files.values():
        path.unlink()
    out = {"seeds": list(range(1, seeds + 1)), "same_lines": lines[0] == lines[1],
           "same_vocabulary": vocab["export"] == vocab["global_sort"]}
    for name, values in hr.items():
        out.update({f"hr10_{name}": values, f"hr10_{name}_mean": float(np.mean(values)),
                    f"hr10_{name}_sd": float(np.std(values, ddof=1)) if seeds > 1 else 0.0})
    return out


def headline(ml: dict | None, gen: dict, scale: int) -> dict:
    """The keys the issues ask for, copied from the sections."""
    step, scaled = gen["step"], gen[f"step_x{scale}"]
    out = {key: step[key] for key in ("job_vs_raw_gensim_words_per_s", "export_seconds",
                                      "export_tokens_per_second", "step_vs_raw_gensim_train")}
    out.update({f"{key}_x{scale}": scaled[key] for key in (
        "job_vs_raw_gensim_words_per_s", "export_seconds", "export_tokens_per_second",
        "step_vs_raw_gensim_train")})
    out.update(generated_tokens=step["tokens"], **{f"generated_tokens_x{scale}": scaled["tokens"]})
    if "gensim" in gen:
        scaling = {f"scaling_words_per_s_{s['workers']}_workers": s["words_per_second"]
                   for s in gen["scaling"]}
        out.update(
            gensim_vs_spark_speedup=gen["spark"]["wall_seconds"] / gen["gensim"]["wall_seconds"],
            generated_hr10_gensim=gen["gensim"]["hr"], generated_hr10_spark=gen["spark"]["hr"],
            generated_hr10_popularity=gen["gensim"]["popularity_hr"],
            generated_purity_gensim=gen["gensim"]["cluster_purity"],
            generated_purity_spark=gen["spark"]["cluster_purity"], **scaling,
            generated_hr10_ppmi_svd=gen["ppmi_svd"]["hr"], generated_purity_ppmi_svd=gen["ppmi_svd"]["cluster_purity"],
            generated_hr10_cooccurrence=gen["cooccurrence"]["cooccurrence_hr"],
            scaling_2_vs_1_workers=scaling["scaling_words_per_s_2_workers"]
            / scaling["scaling_words_per_s_1_workers"])
    if "order_check" in gen:
        out.update({f"order_{key}": gen["order_check"][key] for key in (
            "hr10_export_mean", "hr10_export_sd", "hr10_global_sort_mean", "hr10_global_sort_sd",
            "same_lines", "same_vocabulary")})
    keys = ("movielens_hr10_popularity", "movielens_hr10_default", "movielens_hr10_tuned",
            "movielens_hr10_spark", "movielens_test_pairs", "movielens_tuned_vs_popularity",
            "movielens_gensim_vs_spark_speedup", "movielens_hr10_ppmi_svd", "movielens_hr10_cooccurrence",
            "movielens_ppmi_svd_vs_cooccurrence")
    values = [None] * len(keys) if ml is None else [
        ml["default"]["popularity_hr"], ml["default"]["hr"], ml["tuned"]["hr"], ml["spark"]["hr"],
        ml["default"]["test_pairs"], ml["tuned"]["hr"] / ml["default"]["popularity_hr"],
        ml["spark"]["wall_seconds"] / ml["default"]["wall_seconds"], ml["ppmi_svd"]["hr"],
        ml["cooccurrence"]["cooccurrence_hr"], ml["ppmi_svd"]["hr"] / ml["cooccurrence"]["cooccurrence_hr"]]
    return {**out, **dict(zip(keys, values))}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=12_500_000,
                        help="events of the generated log (12.5M gives about 10.5M tokens)")
    parser.add_argument("--gen-epochs", type=int, default=1, help="epochs on the generated corpus")
    parser.add_argument("--scale", type=int, default=4, help="token multiple of the larger corpus")
    parser.add_argument("--repeats", type=int, default=2, help="job and raw runs each (alternating)")
    parser.add_argument("--scale-repeats", type=int, default=1, help="the same at --scale")
    parser.add_argument("--order-seeds", type=int, default=5,
                        help="seeds per line order in the HR@10 check of the export's order (0: none)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep of ppmi_svd's parameters "
                        f"on the MovieLens hold-out ({len(PPMI_SWEEP)} trainings)")
    parser.add_argument("--work", type=Path, default=WORK, help="generated log, warehouse, corpus")
    parser.add_argument("--quick", action="store_true", help="only the step-vs-raw sections, "
                        "written to <work>/bench_train_quick.json (develop with a small --events)")
    return parser.parse_args(argv)


def sample_load(loads: list, done: threading.Event) -> None:
    """The 1-minute load average every 10 s: whether something else ran during the benchmark."""
    while not done.wait(10.0):
        loads.append(os.getloadavg()[0])


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.chdir(REPO)  # the configs' relative paths resolve against the repository root
    args.work.mkdir(parents=True, exist_ok=True)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    loads, done = [], threading.Event()
    threading.Thread(target=sample_load, args=(loads, done), daemon=True).start()
    spark = get_spark(load_config(REPO / "conf" / "local.yaml", spark_overrides(args.work)).spark,
                      "bench_train")
    ml = (None if args.quick or not (MOVIELENS / "ratings.csv").exists()
          else movielens(spark, args.work, not args.no_sweep))
    gen = generated(spark, args.work, args)
    result = {**headline(ml, gen, args.scale), "spark_master": "local[2]", "params": {
        "default": DEFAULT, "tuned": TUNED, "spark": SPARK, "ppmi_svd": PPMI, "cooccurrence_window": COOC_WINDOW,
        "generated": {**DEFAULT, "epochs": args.gen_epochs, "spark_partitions": 2}},
        "scale": args.scale, "repeats": args.repeats, "scale_repeats": args.scale_repeats,
        "movielens": ml, "generated": gen, "bench_seconds": time.perf_counter() - started,
        "load_average_1m_at_start": load_start, "load_average_1m_at_end": os.getloadavg()[0],
        "load_average_1m_max": max(loads, default=load_start)}
    done.set()
    if args.quick:  # a development run: its file stays beside the work files
        result = {"benchmark": "bench_train --quick", "machine": machine(), **result}
        (args.work / "bench_train_quick.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, sort_keys=True))
        return result
    return write_results("bench_train", result)


if __name__ == "__main__":
    main()
