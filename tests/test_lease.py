"""Run leases (embedlib/lease.py) on the test session's warehouse: a held dt refuses a
second run naming its holder, other dts proceed, stale leases are broken with a warning.
Two real overlapping runs against a metastore service: tests/test_metastore_service.py."""
from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import pytest

from embedlib import lease

DT, OTHER_DT = "2024-03-01", "2024-03-02"


def lease_file(spark, cfg, dt: str = DT) -> Path:
    return Path(lease.lease_path(spark, cfg, dt).removeprefix("file:"))


def plant(path: Path, age_s: float = 0.0, **holder) -> dict:
    """A lease file of another run, last refreshed ``age_s`` seconds ago."""
    holder = {"job": "run_pipeline", "pid": 4242, "host": "other-host", "started": "2024-03-02 01:00:00Z",
              **holder}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return holder


def test_a_held_dt_refuses_a_second_run_naming_its_holder(spark, cfg_factory):
    cfg = cfg_factory()
    plant(lease_file(spark, cfg))
    with pytest.raises(lease.LeaseHeldError, match=r"dt=2024-03-01 of database t_\w+ is being written by another "
                                                   r"run \(job 'run_pipeline', pid 4242 on other-host, since "
                                                   r"2024-03-02 01:00:00Z; lease file:\S+dt=2024-03-01\.lease"):
        lease.acquire(spark, cfg, DT, "second")
    with lease.held(spark, cfg, OTHER_DT, "other dt") as taken:  # another dt proceeds
        assert json.loads(lease_file(spark, cfg, OTHER_DT).read_text()) == taken.holder
        assert taken.holder["pid"] == os.getpid() and taken.holder["job"] == "other dt"
        with lease.held(spark, cfg, OTHER_DT, "a step of that run"):  # reentrant in one process
            pass
        assert lease_file(spark, cfg, OTHER_DT).exists()
    assert not lease_file(spark, cfg, OTHER_DT).exists()  # released by the last take
    assert lease_file(spark, cfg).exists()  # the other run's lease is left alone


@pytest.mark.parametrize("age_s, holder, reason", [
    (11 * 60, {}, r"not refreshed for 11\.0 min \(tables.lease_stale_minutes=10\)"),
    (0, {"host": socket.gethostname(), "pid": 2**22 + 1}, r"its process 4194305 on this host is gone"),
])
def test_a_stale_lease_is_broken_with_a_warning(spark, cfg_factory, embedlib_log, age_s, holder, reason):
    cfg = cfg_factory()
    planted = plant(lease_file(spark, cfg), age_s, **holder)
    with lease.held(spark, cfg, DT, "next run") as taken:
        assert json.loads(lease_file(spark, cfg).read_text()) == taken.holder != planted
    warnings = [r.getMessage() for r in embedlib_log.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("broke the stale lease file:")
    assert f"of {lease.describe(planted)}: " in warnings[0]
    assert re.search(reason, warnings[0]), warnings[0]
    assert not list(lease_file(spark, cfg).parent.iterdir())  # nothing left: no .broken-* file


def test_a_held_lease_is_refreshed_while_its_run_lasts(spark, cfg_factory):
    cfg = cfg_factory(tables={"lease_refresh_seconds": 0.2})
    with lease.held(spark, cfg, DT, "long step"):
        path = lease_file(spark, cfg)
        os.utime(path, (time.time() - 300, time.time() - 300))
        deadline = time.monotonic() + 10
        while time.time() - path.stat().st_mtime > 60 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert time.time() - path.stat().st_mtime < 60


def test_the_lease_lives_in_the_folder_the_metastore_gives_the_database(spark, cfg_factory, tmp_path):
    cfg = cfg_factory()
    assert lease.lease_path(spark, cfg, DT).endswith(f"/{cfg.tables.database}.db/_leases/dt={DT}.lease")
    spark.sql(f"CREATE DATABASE {cfg.tables.database} LOCATION '{tmp_path / 'elsewhere'}'")
    assert lease.lease_path(spark, cfg, DT) == f"file:{tmp_path}/elsewhere/_leases/dt={DT}.lease"
