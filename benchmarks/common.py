"""Shared by the benchmarks: machine description, timing, and the results file."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work"


def load_average() -> float | None:
    """The 1-minute load average now (None where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


# Taken when a benchmark imports this module, i.e. when it starts.
LOAD_AT_START = load_average()


def machine() -> dict:
    """What the figures were measured on (cores matter: these machines are small and shared)."""
    versions = {}
    for pkg in ("pyspark", "numpy", "scipy", "pyarrow", "gensim", "faiss-cpu", "cupy-cuda12x", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
            "load_average_1m_at_start": LOAD_AT_START, "load_average_1m_at_end": load_average(),
            "versions": versions}


def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def write_results(name: str, results: dict) -> dict:
    """Add the machine, write benchmarks/results/<name>.json, print it as the last line."""
    results = {"benchmark": name, "machine": machine(), **results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, sort_keys=True))
    return results
