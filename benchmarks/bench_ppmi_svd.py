"""The ppmi_svd trainer's speed against gensim (issue 23), with its phases.

The whole trainer call (gensim: corpus export, vocabulary, one epoch of training, as
bench_train's generated runs; ppmi_svd: counts, PPMI, every range-finder pass, the small
SVD) on bench_train's generated log (``--events``, 12.5M by default) and on the same
sequences repeated ``--scale`` times under renamed users (bench_train's scaled copy: 4x the
events and pair occurrences, the same distinct pairs, SPPMI entries and items, so the SVD's
size does not grow).
Both trainers see the same sequences; ppmi_svd's phases (count, PMI, each range-finder
pass, the small SVD) are recorded with each run.

The generated log, its sequences and the scaled copy are bench_train's (the same --work by
default), made once and reused by whichever of the two runs first. The trainers' quality
(MovieLens and the generated log, the co-occurrence kNN baseline, the parameter sweep) is
in bench_train.

Writes benchmarks/results/bench_ppmi_svd.json after each run, so a run cut short keeps what
it measured. Run it alone: the load average is recorded.
Usage: .venv/bin/python benchmarks/bench_ppmi_svd.py [--events 12500000] [--scale 4]
"""
from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

from bench_train import (
    DEFAULT,
    GEN_DT,
    WORK,
    ensure_generated,
    ensure_scaled,
    generated_config,
    sample_load,
    spark_overrides,
    with_train,
)
from common import PPMI, write_results

from embedlib import spark_passes, trainers
from embedlib.config import load_config
from embedlib.spark import get_spark
from embedlib.steps import train_item2vec

REPO = Path(__file__).resolve().parents[1]


def timed_train(spark, cfg) -> dict:
    """One trainer call on the dt's sequences: wall seconds and the trainer's figures."""
    sequences_df = train_item2vec.extract(spark, cfg, GEN_DT)
    started = time.perf_counter()
    result = trainers.train(spark, sequences_df, cfg.train, corpus_name="speed")
    result.item_df.count()
    spark_passes.release(result.cached)
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


def headline(gen: dict, s: int) -> dict:
    """The keys the issue asks for, copied from the runs measured so far."""
    out = {}
    for label in ("1x", f"{s}x"):
        if f"ppmi_svd_{label}" in gen:
            suffix = "" if label == "1x" else f"_{label}"
            out[f"ppmi_svd_vs_gensim_train_seconds{suffix}"] = (gen[f"ppmi_svd_{label}"]["seconds"]
                                                                / gen[f"gensim_{label}"]["seconds"])
    if f"ppmi_svd_{s}x" in gen:
        for t in ("ppmi_svd", "gensim"):
            out[f"{t}_time_growth_1x_to_{s}x"] = gen[f"{t}_{s}x"]["seconds"] / gen[f"{t}_1x"]["seconds"]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=12_500_000,
                        help="events of the generated log (bench_train's size by default)")
    parser.add_argument("--scale", type=int, default=4, help="multiple of the larger run's sequences")
    parser.add_argument("--work", type=Path, default=WORK,
                        help="generated log, warehouse, corpus (bench_train's by default: made once for both)")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    args.work.mkdir(parents=True, exist_ok=True)
    loads, done = [os.getloadavg()[0]], threading.Event()
    threading.Thread(target=sample_load, args=(loads, done), daemon=True).start()
    started = time.perf_counter()
    spark = get_spark(load_config(REPO / "conf" / "local.yaml", spark_overrides(args.work)).spark, "bench_ppmi_svd")
    out = {"params": PPMI, "gensim_params": {**DEFAULT, "epochs": 1}, "scale": args.scale, "generated": {}}

    def save():  # after each measurement, so that a run cut short keeps what it measured
        return write_results("bench_ppmi_svd", {
            **out, **headline(out["generated"], args.scale),
            "bench_seconds": time.perf_counter() - started, "load_average_1m_max": max(loads),
            "load_average_1m_samples": loads})

    speed(spark, args.work, args.events, args.scale, out["generated"], save)
    done.set()
    return save()


if __name__ == "__main__":
    main()
