"""Fixtures: one local SparkSession for the whole test run, a fresh database per test, a
per-test seeded random generator. Plain helpers are in tests/helpers.py.

The master is local[2,2]: two threads, and a failed task is retried once (as on a cluster),
so tests can inject task failures.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from embedlib.config import config_from_dict
from tests.helpers import make_config, spark_section


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("warehouse")


@pytest.fixture(scope="session")
def spark(warehouse):
    from embedlib.spark import get_spark

    cfg = config_from_dict(spark_section(warehouse), "tests")
    session = get_spark(cfg.spark, "embedlib-tests")
    yield session
    session.stop()


@pytest.fixture
def cfg_factory(warehouse):
    return lambda **sections: make_config(warehouse, **sections)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's own id: reproducible, and independent of which
    other tests ran before (no module-level generator shared across tests)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
