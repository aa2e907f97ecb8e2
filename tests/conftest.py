"""Fixtures: one local SparkSession for the whole test run, a fresh database per test, a
per-test seeded random generator. Plain helpers are in tests/helpers.py.

The master is local[2,2]: two threads, and a failed task is retried once (as on a cluster),
so tests can inject task failures.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from embedlib.config import config_from_dict
from tests.helpers import REPO, make_config, spark_section


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


@pytest.fixture
def embedlib_log(monkeypatch, caplog):
    """caplog sees embedlib's records (its logger does not propagate by default)."""
    monkeypatch.setattr(logging.getLogger("embedlib"), "propagate", True)
    caplog.set_level(logging.INFO, logger="embedlib")
    return caplog


@pytest.fixture(scope="session")
def metastore_service(tmp_path_factory):
    """thrift://127.0.0.1:PORT of a Hive metastore service for the test run, started with
    scripts/metastore.py on a folder of its own (only when a test asks for it) and stopped at
    the end; the teardown fails if any process of its group is left."""
    folder = tmp_path_factory.mktemp("metastore")
    script = [sys.executable, str(REPO / "scripts" / "metastore.py")]
    started = subprocess.run([*script, "start", "--dir", str(folder), "--timeout", "540"], capture_output=True,
                             text=True, timeout=600)
    assert started.returncode == 0, started.stderr[-3000:]
    pid = json.loads((folder / "metastore.json").read_text())["pid"]
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([*script, "stop", "--dir", str(folder)], check=True, timeout=120)
        with pytest.raises(ProcessLookupError):  # signal 0: is any process of the group left?
            os.killpg(pid, 0)
