"""One local SparkSession for the whole test run, and a fresh database per test.

The master is local[2,2]: two threads, and a failed task is retried once (as on a cluster),
so tests can inject task failures.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from embedlib.config import Config, config_from_dict

REPO = Path(__file__).resolve().parents[1]
MOVIELENS = REPO.parent / "shared" / "data" / "movielens-latest-small"


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("warehouse")


@pytest.fixture(scope="session")
def spark(warehouse):
    from embedlib.spark import get_spark

    cfg = config_from_dict(_spark_section(warehouse), "tests")
    session = get_spark(cfg.spark, "embedlib-tests")
    yield session
    session.stop()


def _spark_section(warehouse: Path) -> dict:
    return {"spark": {"master": "local[2,2]", "warehouse_dir": str(warehouse),
                      "metastore_dir": str(warehouse / "metastore_db"),
                      "shuffle_partitions": 4, "ui_enabled": False, "driver_memory": "2g"}}


def make_config(warehouse: Path, **sections) -> Config:
    """A config on the test warehouse with a database of its own, plus ``sections``."""
    raw = _spark_section(warehouse)
    raw["tables"] = {"database": f"t_{uuid.uuid4().hex[:10]}"}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw, "tests")


@pytest.fixture
def cfg_factory(warehouse):
    return lambda **sections: make_config(warehouse, **sections)
