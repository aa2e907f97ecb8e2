"""A 6-dt backfill on the sample log against a Hive metastore service: one dt after the
other (``--parallel 1``) vs sequences and training of two dts at once (``--parallel 2``,
issue 26).

Both backfills run jobs/run_pipeline.py over the same six dts (conf/local.yaml on the
sample log of `make sample`, or a smaller one with --n-events), each in a process of its
own, with their own warehouse and database on one metastore service started here from
scripts/metastore.py (and stopped at the end). conf/local.yaml's trainer (ppmi_svd) is
deterministic, and gensim (--set train.trainer=gensim) is made repeatable (train.workers=1
per model, a fixed PYTHONHASHSEED), so that both must publish the same vectors: the result
records, per dt, the largest absolute difference between the two runs' published item
vectors (same ids required). The runs alternate (sequential first) --rounds times; the
medians count.

``backfill_parallel2_vs_sequential``: the sequential backfill's wall seconds over the
parallel one's (above 1: the parallel backfill is faster). The machine's load average is
recorded at the start and end; on a shared machine both runs get what is left of it.

Prints one JSON object on the last line and writes it to benchmarks/results/bench_backfill.json.
Usage: .venv/bin/python benchmarks/bench_backfill.py [--n-events 150000] [--rounds 1] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from common import WORK, load_average, write_results  # benchmarks/, next to this file

from embedlib.pipeline import date_range
from embedlib.sample_data import SampleSpec, write_sample

REPO = Path(__file__).resolve().parents[1]
FOLDER = WORK / "bench_backfill"
FIRST, LAST = "2024-01-05", "2024-01-10"  # six dts; the sample log covers 2024-01-01..10
METASTORE = [sys.executable, str(REPO / "scripts" / "metastore.py")]


def backfill(uri: str, sample: Path, name: str, parallel: int, sets: list[str]) -> tuple[float, dict]:
    """(wall seconds, {dt: published item vectors folder}) of one backfill in a process."""
    work = FOLDER / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    overrides = [f"spark.warehouse_dir={work / 'warehouse'}", f"spark.hive_metastore_uris={uri}",
                 f"tables.database={name}", f"input.path={sample / 'events'}",
                 f"report.out_dir={work / 'reports'}", f"train.corpus_dir={work / 'corpus'}",
                 "train.workers=1", *sets]
    cmd = [sys.executable, str(REPO / "jobs" / "run_pipeline.py"), "--conf", str(REPO / "conf" / "local.yaml"),
           "--from", FIRST, "--to", LAST, "--parallel", str(parallel),
           *[arg for s in overrides for arg in ("--set", s)]]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    written = re.findall(rf"wrote {name}\.embeddings_item dt=(\S+) -> file:(\S+)", proc.stderr)
    return seconds, dict(written)


def vectors(folder: str) -> dict[str, np.ndarray]:
    table = pq.read_table(folder, columns=["id", "vector"]).to_pydict()
    return {i: np.asarray(v, dtype=np.float64) for i, v in zip(table["id"], table["vector"])}


def max_differences(sequential: dict, parallel: dict) -> dict[str, float]:
    """{dt: max |a - b|} over the two runs' published item vectors of each dt."""
    out = {}
    for dt in date_range(FIRST, LAST):
        a, b = vectors(sequential[dt]), vectors(parallel[dt])
        if sorted(a) != sorted(b):
            sys.exit(f"dt={dt}: the two backfills published other ids")
        out[dt] = float(max(np.abs(a[i] - b[i]).max() for i in a))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-events", type=int, default=SampleSpec().n_events, help="sample log size")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the two backfills")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override")
    args = parser.parse_args(argv)
    # A SIGTERM (e.g. from `timeout`) ends the run through the finally below: the service stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sample = FOLDER / f"sample_{args.n_events}"
    if not (sample / "events").exists():
        write_sample(SampleSpec(n_events=args.n_events), sample)
    started = subprocess.run([*METASTORE, "start", "--dir", str(FOLDER / "metastore")], capture_output=True,
                             text=True, check=True)
    uri = started.stdout.strip()
    times: dict[int, list[float]] = {1: [], 2: []}
    folders: dict[int, dict] = {}  # {parallel: {dt: published folder}} of the last round
    try:
        for _ in range(args.rounds):
            for parallel in (1, 2):
                seconds, folders[parallel] = backfill(uri, sample, f"parallel{parallel}", parallel, args.sets)
                times[parallel].append(seconds)
                print(f"--parallel {parallel}: {seconds:.1f} s, load {load_average()}", flush=True)
        differences = max_differences(folders[1], folders[2])
    finally:
        subprocess.run([*METASTORE, "stop", "--dir", str(FOLDER / "metastore")], check=True)
    sequential, parallel = statistics.median(times[1]), statistics.median(times[2])
    return write_results("bench_backfill", {
        "dts": date_range(FIRST, LAST), "n_events": args.n_events, "rounds": args.rounds, "sets": args.sets,
        "sequential_seconds": times[1], "parallel2_seconds": times[2],
        "backfill_parallel2_vs_sequential": round(sequential / parallel, 3),
        "max_abs_vector_difference_by_dt": differences,
        "max_abs_vector_difference": max(differences.values())})


if __name__ == "__main__":
    main()
