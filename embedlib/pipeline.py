"""The daily pipeline: every step for one dt, and date ranges (backfills) in date order."""
from __future__ import annotations

import datetime as _dt
from typing import Callable

from pyspark.sql import SparkSession

from embedlib.config import Config
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger
from embedlib.steps import build_sequences

log = get_logger(__name__)

# (name, run function) in the order a dt goes through them.
STEPS: list[tuple[str, Callable[[SparkSession, Config, str], dict]]] = [
    ("build_sequences", build_sequences.run),
]


def date_range(first: str, last: str) -> list[str]:
    """Every dt from ``first`` to ``last`` inclusive, in order."""
    start, end = _dt.date.fromisoformat(first), _dt.date.fromisoformat(last)
    if end < start:
        raise EmbedlibError(f"--to {last} is before --from {first}")
    return [(start + _dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def run_dt(spark: SparkSession, cfg: Config, dt: str) -> dict:
    """Run every step for ``dt``; returns {step name: step summary}."""
    return {name: fn(spark, cfg, dt) for name, fn in STEPS}


def run_range(spark: SparkSession, cfg: Config, dts: list[str]) -> dict[str, dict]:
    results = {}
    for i, dt in enumerate(dts, 1):
        log.info("pipeline dt=%s (%d of %d)", dt, i, len(dts))
        results[dt] = run_dt(spark, cfg, dt)
    return results


def summary_rows(results: dict[str, dict]) -> list[dict]:
    """One flat row per dt with the figures an operator looks at first."""
    rows = []
    for dt, steps in results.items():
        seq = steps.get("build_sequences", {})
        rows.append({
            "dt": dt,
            "input_rows": seq.get("input_rows"),
            "bad_rows": sum(seq.get("dropped", {}).values()),
            "items": seq.get("items", {}).get("admitted"),
            "sequences": seq.get("sequences", {}).get("written"),
            "tokens": seq.get("sequences", {}).get("tokens"),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain fixed-width text table (header from the first row's keys)."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    cells = [[_cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
