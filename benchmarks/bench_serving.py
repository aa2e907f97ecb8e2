"""Search benchmark: batched exact top-k of EmbeddingIndex vs faiss-cpu (and CuPy vs PyTorch).

CPU: queries per second for top-k over n x dim random unit vectors (inner product, so
cosine), this index (NumPy backend, float32 BLAS matmul over memory-bounded chunks) against
faiss IndexFlatIP on the same data and queries, timed alternately in one run, at several
batch sizes; the headline ``cpu_qps_vs_faiss`` is the ratio at batch 1024 with both
libraries' default threads. The batch-1024 comparison runs again in child processes with
other thread settings (``cpu_variants``): one thread each (OMP/OpenBLAS threads = 1), which a
shared, loaded CPU disturbs least, and faiss with OMP_WAIT_POLICY=PASSIVE (its OpenMP
threads sleep instead of spinning, which helps it a lot on an oversubscribed CPU).

GPU: where CuPy sees a CUDA device, the index on the GPU (backend cupy) against a PyTorch
matmul + topk baseline on the same device at batch 1, 64 and 1024, with device memory and
lookup throughput; elsewhere ``"gpu": null`` and ``gpu_note`` says why.

The last line printed is the results JSON, also written to
benchmarks/results/bench_serving.json with the machine description.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from common import write_results  # benchmarks/, next to this file

from embedlib.serving import EmbeddingIndex
from embedlib.serving.backend import cupy_status

# Child runs at batch 1024 with other thread settings (set before BLAS / OpenMP load).
VARIANTS = {
    "one_thread_each": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    "faiss_omp_wait_passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="index rows")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batches", default="1,64,1024", help="CPU batch sizes")
    parser.add_argument("--repeats", type=int, default=4, help="timed rounds per batch size")
    parser.add_argument("--max-chunk-bytes", type=int, default=0, help="0: the index default")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="child runs with other thread settings ('' for none)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_data(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ids (n,) and unit-norm float32 vectors (n, dim)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.arange(n).astype(str).astype(object), vectors


def make_queries(batch: int, dim: int, seed: int) -> np.ndarray:
    queries = np.random.default_rng(seed).standard_normal((batch, dim), dtype=np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def queries_per_round(batch: int) -> int:
    """Enough queries per timed round that small batches are not all overhead."""
    return max(batch, 32 if batch == 1 else 256)


def cpu_benchmark(args, ids, vectors) -> dict:
    """QPS of this index and of faiss IndexFlatIP per batch size, timed alternately."""
    import faiss

    index = EmbeddingIndex(ids, vectors, backend="numpy", metric="dot",
                           max_chunk_bytes=args.max_chunk_bytes)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(vectors)
    out = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        times = {"index": [], "faiss": []}
        agree = []
        n_batches = queries_per_round(batch) // batch
        for rnd in range(args.repeats + 1):  # round 0 warms up and is not timed
            sets = [make_queries(batch, args.dim, 1000 * rnd + j) for j in range(n_batches)]
            t0 = time.perf_counter()
            ours = [index.topk(q, k=args.k).rows for q in sets]
            t1 = time.perf_counter()
            theirs = [flat.search(q, args.k)[1] for q in sets]
            t2 = time.perf_counter()
            agree += [float((a == b).mean()) for a, b in zip(ours, theirs)]
            if rnd:
                times["index"].append(t1 - t0)
                times["faiss"].append(t2 - t1)
        queries = batch * n_batches
        qps = {name: queries / float(np.median(t)) for name, t in times.items()}
        # Each round times both back to back; the median of the per-round ratios cancels
        # most of the drift of a shared, loaded CPU.
        paired = np.array(times["faiss"]) / np.array(times["index"])
        out[str(batch)] = {"index_qps": round(qps["index"], 2),
                           "faiss_qps": round(qps["faiss"], 2),
                           "ratio": round(float(np.median(paired)), 3),
                           "ratio_per_round": np.round(paired, 3).tolist(),
                           "ids_equal_to_faiss": round(float(np.mean(agree)), 6),
                           "queries_per_round": queries, "rounds": args.repeats}
        print(f"cpu batch {batch}: {out[str(batch)]}", file=sys.stderr, flush=True)
    out["lookup_ids_per_s"] = lookup_rate(index, ids)
    out["max_chunk_bytes"] = index.max_chunk_bytes
    return out


def lookup_rate(index: EmbeddingIndex, ids: np.ndarray, batch: int = 1024,
                rounds: int = 50) -> float:
    """Ids per second for lookup() of random batches of known ids (vectors to the host)."""
    rng = np.random.default_rng(1)
    sets = [ids[rng.integers(0, len(ids), batch)] for _ in range(rounds)]
    index.lookup(sets[0])
    t0 = time.perf_counter()
    for s in sets:
        index.lookup(s)
    return round(batch * rounds / (time.perf_counter() - t0), 1)


def variant_child(args, env_overrides: dict) -> dict:
    """The CPU benchmark at batch 1024 in a child process with ``env_overrides``."""
    cmd = [sys.executable, __file__, "--child", "--n", str(args.n), "--dim", str(args.dim),
           "--k", str(args.k), "--batches", "1024", "--repeats", str(args.repeats),
           "--max-chunk-bytes", str(args.max_chunk_bytes)]
    proc = subprocess.run(cmd, env=dict(os.environ, **env_overrides), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return {"env": env_overrides, **json.loads(proc.stdout.strip().splitlines()[-1])}


def gpu_benchmark(args, ids, vectors) -> tuple[dict | None, str]:
    """CuPy index vs PyTorch matmul + topk on the same GPU; (None, why) without one."""
    cupy, why_not = cupy_status()
    if cupy is None:
        return None, f"GPU part skipped: {why_not}"
    from serving_gpu import run_gpu_benchmark

    return run_gpu_benchmark(cupy, ids, vectors, args.k, (1, 64, 1024), make_queries,
                             lookup_rate), ""


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    ids, vectors = make_data(args.n, args.dim)
    cpu = cpu_benchmark(args, ids, vectors)
    if args.child:
        print(json.dumps({"cpu": cpu, "load_average_1m": os.getloadavg()[0]}))
        return cpu
    variants = {name: variant_child(args, VARIANTS[name])
                for name in filter(None, args.variants.split(","))}
    gpu, gpu_note = gpu_benchmark(args, ids, vectors)
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return write_results("bench_serving", {
        "n": args.n, "dim": args.dim, "k": args.k,
        "cpu_qps_vs_faiss": cpu["1024"]["ratio"] if "1024" in cpu else None,
        "cpu": cpu, "cpu_variants": variants, "gpu": gpu, "gpu_note": gpu_note or None,
        "numpy_blas": f"{blas.get('name')} {blas.get('version')}",
        "load_average_1m_at_end": os.getloadavg()[0],
        "seconds": round(time.perf_counter() - started, 1),
    })


if __name__ == "__main__":
    main()
