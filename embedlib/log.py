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
def step(log: logging.Logger, name: str, spark=None) -> Iterator[None]:
    """Log start and end (with seconds) of a step; label its Spark jobs for the UI."""
    sc = spark.sparkContext if spark is not None else None
    previous: str | None = sc.getLocalProperty("spark.job.description") if sc else None
    if sc is not None:
        sc.setJobDescription(name)
    log.info("%s: start", name)
    started = time.perf_counter()
    try:
        yield
    except Exception:
        # INFO, not ERROR: the job prints the one ERROR line with the cause (embedlib/cli.py).
        log.info("%s: failed after %.1fs", name, time.perf_counter() - started)
        raise
    else:
        log.info("%s: done in %.1fs", name, time.perf_counter() - started)
    finally:
        if sc is not None:
            sc.setJobDescription(previous)
