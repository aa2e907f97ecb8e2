"""Progress logging: one format for every step, and a timer that also labels Spark jobs."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def get_logger(name: str) -> logging.Logger:
    """A logger under ``embedlib`` that prints to stderr once, whatever the caller's setup."""
    root = logging.getLogger("embedlib")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return root.getChild(name.removeprefix("embedlib."))


@contextlib.contextmanager
def step(log: logging.Logger, name: str, spark=None) -> Iterator[dict]:
    """Log start and end (with seconds and Spark jobs) of a step; label its Spark jobs.

    Yields a dict that holds, once the block is done, ``seconds`` and ``spark_jobs`` (the
    Spark jobs the block started, counted through a job group of its own).
    """
    sc = spark.sparkContext if spark is not None else None
    previous: str | None = sc.getLocalProperty("spark.job.description") if sc else None
    previous_group: str | None = sc.getLocalProperty("spark.jobGroup.id") if sc else None
    group = f"embedlib-{name}-{time.time_ns()}"
    if sc is not None:
        sc.setJobDescription(name)
        sc.setLocalProperty("spark.jobGroup.id", group)
    info: dict = {}
    log.info("%s: start", name)
    started = time.perf_counter()
    try:
        yield info
    except Exception:
        # INFO, not ERROR: the job prints the one ERROR line with the cause (embedlib/cli.py).
        log.info("%s: failed after %.1fs", name, time.perf_counter() - started)
        raise
    else:
        info["seconds"] = time.perf_counter() - started
        jobs = ""
        if sc is not None:
            info["spark_jobs"] = len(sc.statusTracker().getJobIdsForGroup(group))
            jobs = f" ({info['spark_jobs']} Spark jobs)"
        log.info("%s: done in %.1fs%s", name, info["seconds"], jobs)
    finally:
        if sc is not None:
            sc.setJobDescription(previous)
            sc.setLocalProperty("spark.jobGroup.id", previous_group)


class Phases:
    """Wall seconds per named phase of a step, summed when a phase repeats.

    ``with phases("gram"): ...``; ``phases.seconds`` is the {phase: seconds} dict. Spark
    is lazy, so a phase holds the time of the actions it runs (reads a later phase triggers
    count there).
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
