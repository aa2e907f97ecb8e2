"""GPU half of bench_serving.py: the CuPy index vs PyTorch matmul + topk on the same device.

Imported only where CuPy sees a CUDA device. Every timing includes moving the queries to
the device and the results back, for both.
"""
from __future__ import annotations

import time

import numpy as np

from embedlib.serving import EmbeddingIndex

ROUNDS = {1: 200, 64: 50, 1024: 10}


def run_gpu_benchmark(cupy, ids, vectors, k: int, batches, make_queries, lookup_rate) -> dict:
    """Figures per batch size: QPS of each, their ratio, peak device memory; lookup rate."""
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    index = EmbeddingIndex(ids, vectors, backend="cupy", metric="dot")
    out = {"device": index.backend.device, "cupy": cupy.__version__,
           "index_device_bytes": index.nbytes, "batches": {}}
    torch, matrix, why_not = _torch_matrix(vectors)
    out["torch"] = torch.__version__ if torch else None
    out["torch_note"] = why_not or None
    for batch in batches:
        sets = [make_queries(batch, vectors.shape[1], seed) for seed in range(ROUNDS[batch])]
        pool.free_all_blocks()
        index.topk(sets[0], k=k)  # warm-up: kernels compiled and cached
        t0 = time.perf_counter()
        ours = [index.topk(q, k=k).rows for q in sets]
        elapsed = time.perf_counter() - t0
        row = {"cupy_qps": round(batch * len(sets) / elapsed, 1),
               "cupy_pool_bytes": int(pool.total_bytes())}
        if torch is not None:
            row.update(_torch_run(torch, matrix, sets, k, ours))
            row["ratio"] = round(row["cupy_qps"] / row["torch_qps"], 3)
        out["batches"][str(batch)] = row
    out["lookup_ids_per_s"] = lookup_rate(index, ids)
    return out


def _torch_matrix(vectors):
    try:
        import torch
    except ImportError as exc:
        return None, None, f"torch is not installed ({exc})"
    if not torch.cuda.is_available():
        return None, None, "torch sees no CUDA device"
    return torch, torch.from_numpy(vectors).cuda(), ""


def _torch_run(torch, matrix, sets, k: int, ours) -> dict:
    """QPS of scores = q @ M.T then torch.topk, peak memory, and agreement with ours."""
    torch.cuda.reset_peak_memory_stats()

    def search(q):
        scores = torch.from_numpy(q).cuda() @ matrix.T
        return torch.topk(scores, k, dim=1).indices.cpu().numpy()

    search(sets[0])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    theirs = [search(q) for q in sets]
    elapsed = time.perf_counter() - t0
    return {"torch_qps": round(len(sets) * sets[0].shape[0] / elapsed, 1),
            "torch_peak_bytes": int(torch.cuda.max_memory_allocated()),
            "ids_equal_to_torch": round(float(np.mean([(a == b).mean()
                                                       for a, b in zip(ours, theirs)])), 6)}
