"""The lookup service under load: requests/s and latency per concurrency, hot swaps under load.

Setup: ROWS x DIM float32 random unit vectors (1,000,000 x 128), written as two versions
(Parquet + manifests, no Spark) under benchmarks/work/bench_service; ``scripts/serve.py``
serves the first on 127.0.0.1 (NumPy backend, one worker) in its own process.

1. A bounded closed-loop load of GET /similar (one id, k=10) and of POST /vectors (one id)
   from 1, 16 and 64 concurrent clients, a fixed number of requests each: requests/s and
   p50 / p99 / p99.9 latency; the server's RSS before and after.
2. The same queries through ``EmbeddingIndex.topk`` in this process, in batches of the
   concurrency (what an in-process caller with that many queries at hand would do), so the
   HTTP cost is a ratio: ``service_qps_vs_in_process_c<c>``.
3. Precomputed neighbours: the first version registered again (a rerun of the served dt)
   with a neighbours table of the ids the load asks for (their exact top K, computed here as
   jobs/build_neighbors.py would), swapped in by POST /admin/reload while 16 clients send
   /similar (failed requests during that swap); then GET /similar from 16 clients answered
   from the table (10 x --requests of them, ids drawn from the table's):
   ``qps_c16_precomputed``, ``p99_ms_c16_precomputed`` and their ratio to the exact path,
   ``precomputed_qps_vs_exact_c16``.
4. A mixed /similar + /vectors load from 16 clients while 3 hot swaps happen (a newer
   manifest, then POST /admin/reload): failed requests (must be 0), latency during the
   reloads, the reload times and the server's peak RSS (two indexes during a swap).

The machine's 1-minute load average at start and end is recorded: figures taken on a busy
machine are lower than on an idle one.

The last line printed is the results JSON, also written to benchmarks/results/bench_service.json.

Usage: python benchmarks/bench_service.py [--rows 1000000] [--requests 2000] [--results-name NAME]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import make_data  # noqa: E402
from common import WORK, write_results  # noqa: E402

from embedlib import manifest  # noqa: E402
from embedlib.serving import EmbeddingIndex  # noqa: E402
from embedlib.serving.loadtest import (  # noqa: E402
    closed_loop,
    free_port,
    wait_until_up,
    write_manifest,
    write_neighbors,
    write_version,
)

REPO = Path(__file__).resolve().parents[1]
FOLDER = WORK / "bench_service"
K = 10
# The precomputed phase sends this many times --requests (ids drawn from the table's): at a few
# thousand answers/s, the p99 of --requests answers would be that of well under a second.
PRECOMPUTED_REQUESTS = 10
DTS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--requests", type=int, default=2000,
                        help="requests per endpoint and concurrency level")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument("--results-name", default="bench_service",
                        help="benchmarks/results/<name>.json (another name keeps a trial run apart "
                             "from the figures the docs render)")
    return parser.parse_args(argv)


def memory_kib(pid: int) -> dict:
    """Current and peak resident memory of a process (Linux /proc), in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    return {name: round(int(fields[key].split()[0]) / 1024, 1)
            for name, key in (("rss_mib", "VmRSS"), ("peak_rss_mib", "VmHWM"))}


def requests_for(kind: str, ids: np.ndarray, picks: np.ndarray) -> list:
    if kind == "similar":
        return [("GET", f"/similar?id={ids[j]}&k={K}", None) for j in picks]
    return [("POST", "/vectors", json.dumps({"ids": [str(ids[j])]}).encode()) for j in picks]


def start_server(root: str, port: int) -> subprocess.Popen:
    conf = FOLDER / "serve.yaml"
    conf.write_text(yaml.safe_dump({"serve": {"manifests": root, "port": port, "backend": "numpy"}}))
    return subprocess.Popen([sys.executable, "scripts/serve.py", "--conf", str(conf)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def in_process_qps(index: EmbeddingIndex, ids: np.ndarray, picks: np.ndarray, batch: int) -> float:
    """Queries/s of index.topk over the same ids, ``batch`` of them per call."""
    index.topk(list(ids[picks[:batch]]), k=K, exclude_self=True)
    t0 = time.perf_counter()
    for start in range(0, len(picks), batch):
        index.topk(list(ids[picks[start:start + batch]]), k=K, exclude_self=True)
    return len(picks) / (time.perf_counter() - t0)


def swap_phase(args, port: int, pid: int, root: str, versions: list, ids, rng) -> dict:
    """Mixed load from 16 clients while ``args.swaps`` reloads happen; failures and latency."""
    picks = rng.integers(0, len(ids), 100 * args.requests)  # more than needed: stops after the swaps
    load = [r for pair in zip(requests_for("similar", ids, picks[::2]),
                              requests_for("vectors", ids, picks[1::2])) for r in pair]
    done, windows, peak = threading.Event(), [], [0.0]

    def swapper():
        import http.client

        time.sleep(1.0)
        for n in range(1, args.swaps + 1):
            older = versions[1] if n % 2 else versions[0]  # a newer dt may point at older data
            write_manifest(root, dataclasses.replace(older, dt=DTS[n]))
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            conn.request("POST", "/admin/reload")
            outcome = json.loads(conn.getresponse().read())
            windows.append((t0, time.perf_counter(), outcome))
            time.sleep(1.0)
        done.set()

    def sampler():
        while not done.is_set():
            peak[0] = max(peak[0], memory_kib(pid)["rss_mib"])
            time.sleep(0.1)

    threads = [threading.Thread(target=swapper), threading.Thread(target=sampler)]
    for t in threads:
        t.start()
    result = closed_loop(port, load, 16, max_seconds=900, until=done)
    for t in threads:
        t.join()
    during = [lat for start, lat in zip(result.starts, result.latencies)
              if any(a <= start <= b for a, b, _ in windows)]
    ms = np.asarray(during) * 1000
    return {"load": result.summary(), "versions_seen": sorted({v for v in result.versions if v}),
            "load_outlasted_the_swaps": done.is_set() and len(result.statuses) < len(load),
            "swaps": [{"version": o["version"], "changed": o["changed"], "error": o["error"],
                       "reload_seconds": round(b - a, 2)} for a, b, o in windows],
            "requests_during_reloads": len(during),
            "p50_ms_during_reloads": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms_during_reloads": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "max_ms_during_reloads": round(float(ms.max()), 2) if len(ms) else None,
            "server_rss_sampled_max_mib": peak[0], "errors": [e.decode(errors="replace")
                                                              for e in result.errors[:5]]}


def reload(port: int) -> dict:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/admin/reload")
    return json.loads(conn.getresponse().read())


def precomputed_phase(args, port: int, root: str, first, index: EmbeddingIndex, ids, rng) -> dict:
    """A rerun of the served dt with neighbours for the asked ids, swapped in under load; then
    GET /similar from 16 clients answered from them."""
    picks = rng.integers(0, len(ids), args.requests)
    neighbors = write_neighbors(FOLDER / "n1", index, K, ids=np.unique(ids[picks]))
    write_manifest(root, dataclasses.replace(first, registration=manifest.new_registration(), neighbors=neighbors))
    done, outcome = threading.Event(), {}

    def swap():
        time.sleep(0.5)
        outcome.update(reload(port))
        time.sleep(0.5)
        done.set()
    swapper = threading.Thread(target=swap)
    swapper.start()
    during = closed_loop(port, requests_for("similar", ids, rng.integers(0, len(ids), 100 * args.requests)),
                         16, max_seconds=900, until=done)
    swapper.join()
    loaded = closed_loop(port, requests_for("similar", ids, rng.choice(picks, PRECOMPUTED_REQUESTS * args.requests)),
                         16, keep_bodies=True)
    sources = {json.loads(body).get("source") for _, body in filter(None, loaded.bodies)}
    return {"rerun_swap": {"changed": outcome.get("changed"), "error": outcome.get("error"),
                           "load": during.summary()},
            "similar": loaded.summary(), "sources": sorted(sources)}


def write_versions(ids, vectors, root: str) -> list:
    """Two versions' data; only the first one's manifest stays (the swaps add the others)."""
    shutil.rmtree(FOLDER, ignore_errors=True)
    first = write_version(root, DTS[0], FOLDER / "v1", ids, vectors)
    second = write_version(root, "2000-01-01", FOLDER / "v2", ids, np.roll(vectors, 1, axis=1))
    (Path(root) / "item" / "dt=2000-01-01.json").unlink()
    return [first, second]


def main(argv=None) -> dict:
    args = parse_args(argv)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    ids, vectors = make_data(args.rows, args.dim)
    root = str(FOLDER / "_manifests")
    versions = write_versions(ids, vectors, root)
    rng = np.random.default_rng(7)
    port = free_port()
    proc = start_server(root, port)
    try:
        health = wait_until_up(port, proc=proc, timeout=600)
        pid = health["pid"]
        memory_before = memory_kib(pid)
        closed_loop(port, requests_for("similar", ids, rng.integers(0, len(ids), 50)), 4)  # warm-up
        levels, index = {}, EmbeddingIndex(ids, vectors, backend="numpy")
        for c in [int(c) for c in args.concurrency.split(",")]:
            picks = rng.integers(0, len(ids), args.requests)
            similar = closed_loop(port, requests_for("similar", ids, picks), c).summary()
            vectors_load = closed_loop(port, requests_for("vectors", ids, picks), c).summary()
            in_process = in_process_qps(index, ids, picks, c)
            levels[str(c)] = {"similar": similar, "vectors": vectors_load,
                              "in_process_topk_qps": round(in_process, 1),
                              "service_qps_vs_in_process": round(similar["qps"] / in_process, 3)}
            print(f"c={c}: {levels[str(c)]}", file=sys.stderr, flush=True)
        precomputed = precomputed_phase(args, port, root, versions[0], index, ids, rng)
        print(f"precomputed: {precomputed}", file=sys.stderr, flush=True)
        del index
        memory_after = memory_kib(pid)
        batching = wait_until_up(port)["micro_batches"]
        swaps = swap_phase(args, port, pid, root, versions, ids, rng)
        memory_after_swaps = memory_kib(pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(FOLDER, ignore_errors=True)  # two versions' Parquet: 1 GB at 1M x 128
    c16 = levels.get("16", {})
    return write_results(args.results_name, {
        "rows": args.rows, "dim": args.dim, "k": K, "requests_per_level": args.requests,
        "qps_c16": c16.get("similar", {}).get("qps"),
        "p99_ms_c16": c16.get("similar", {}).get("p99_ms"),
        "qps_c16_precomputed": precomputed["similar"].get("qps"),
        "p99_ms_c16_precomputed": precomputed["similar"].get("p99_ms"),
        "precomputed_qps_vs_exact_c16": round(precomputed["similar"]["qps"] / c16["similar"]["qps"], 1)
        if c16 else None,
        "failed_requests_during_swaps": swaps["load"]["failed"],
        "failed_requests_during_rerun_swap": precomputed["rerun_swap"]["load"]["failed"],
        "service_qps_vs_in_process_c16": c16.get("service_qps_vs_in_process"),
        "levels": levels, "micro_batches": batching, "precomputed": precomputed, "swaps": swaps,
        "server_memory_mib": {"before_load": memory_before, "after_load": memory_after,
                              "after_swaps": memory_after_swaps},
        "index_mib": round(args.rows * args.dim * 4 / 2**20, 1),
        "load_average_1m_at_start": load_start, "load_average_1m_at_end": os.getloadavg()[0],
        "seconds": round(time.perf_counter() - started, 1),
    })


if __name__ == "__main__":
    main()
