"""Sequence job speed: events/second at growing log sizes, and how time grows with size.

Generates seeded sample logs (CSV, embedlib.sample_data) of each size, warms Spark up on a
small log, then times the whole build_sequences step (read, clean, sessionize, write both
tables) once per size in one Spark session.

``--multiline true,false`` times each size once per ``input.csv_multiline`` mode (the log
is one CSV file: with multiLine Spark parses it in one task, without it splits it); the
first mode's runs are the ones the docs render, the others are under ``multiline``.

Usage: python benchmarks/bench_sequences.py [--sizes 1000000,4000000,16000000]
       [--multiline auto] [--results-name bench_sequences]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, timed, write_results  # noqa: E402

from embedlib.config import config_from_dict  # noqa: E402
from embedlib.log import get_logger  # noqa: E402
from embedlib.sample_data import SampleSpec, write_sample  # noqa: E402

log = get_logger("bench_sequences")
DT = "2024-01-10"


def spec_for(n_events: int) -> SampleSpec:
    """Users and items grow with the log, as in a real site."""
    return SampleSpec(n_events=n_events, n_users=max(2000, n_events // 40),
                      n_items=max(2000, n_events // 200), n_clusters=50, days=10, end_date=DT)


def run_size(spark, n_events: int, multiline: str = "auto") -> dict:
    from embedlib.steps import build_sequences

    folder = WORK / f"sequences_{n_events}_{multiline}"
    shutil.rmtree(folder, ignore_errors=True)
    gen_seconds, info = timed(write_sample, spec_for(n_events), folder)
    cfg = config_from_dict({"tables": {"database": f"bench_sequences_{n_events}_{multiline}"},
                            "input": {"path": info["path"], "columns": {"event_type": "event_type"},
                                      "csv_multiline": multiline},
                            "sequences": {"lookback_days": 10, "min_count": 3}})
    seconds, summary = timed(build_sequences.run, spark, cfg, DT)
    shutil.rmtree(folder, ignore_errors=True)
    log.info("%d events, csv_multiline=%s: %.1fs (%.0f events/s)", info["events"], multiline, seconds,
             info["events"] / seconds)
    return {"events": info["events"], "seconds": seconds, "events_per_second": info["events"] / seconds,
            "generate_seconds": gen_seconds, "sequences": summary["sequences"]["written"],
            "tokens": summary["sequences"]["tokens"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,4000000,16000000")
    parser.add_argument("--driver-memory", default="12g")
    parser.add_argument("--multiline", default="auto", help="input.csv_multiline modes, comma-separated")
    parser.add_argument("--results-name", default="bench_sequences")
    args = parser.parse_args(argv)
    from embedlib.spark import get_spark

    wh = WORK / "sequences_warehouse"
    shutil.rmtree(wh, ignore_errors=True)
    spark = get_spark(config_from_dict({"spark": {
        "warehouse_dir": str(wh),
        "driver_memory": args.driver_memory, "shuffle_partitions": 16}}).spark, "bench_sequences")
    run_size(spark, 50_000)  # warm-up: JVM, Python workers, metastore
    sizes, modes = [int(s) for s in args.sizes.split(",")], args.multiline.split(",")
    by_mode = {mode: {str(n): run_size(spark, n, mode) for n in sizes} for mode in modes}
    spark.stop()
    runs = by_mode[modes[0]]
    results = {"runs": runs, "events_per_second": {k: r["events_per_second"] for k, r in runs.items()},
               "csv_multiline": modes[0],
               "multiline": {mode: {k: r["events_per_second"] for k, r in mode_runs.items()}
                             for mode, mode_runs in by_mode.items()}}
    if len(sizes) > 1:
        first, last = runs[str(sizes[0])], runs[str(sizes[-1])]
        results[f"time_growth_{_label(sizes[0])}_to_{_label(sizes[-1])}"] = last["seconds"] / first["seconds"]
        results["events_growth"] = last["events"] / first["events"]
    return write_results(args.results_name, results)


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


if __name__ == "__main__":
    main()
