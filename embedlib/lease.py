"""Run leases: one writer per (database, dt), whatever the metastore.

Before a step writes dt, its run takes the lease of (database, dt): the file
``<database folder>/_leases/dt=<dt>.lease``, created exclusively through Hadoop's
FileSystem (``create`` without overwrite: atomic on HDFS; on the local filesystem an
``O_CREAT | O_EXCL`` open, since Hadoop's local create checks and creates in two moves). It
holds the holder (job, pid, host, start time) as JSON, and its modification time is
refreshed every ``tables.lease_refresh_seconds`` while the run holds it. A second run of the
same dt stops at once (``LeaseHeldError``: exit 2, one ERROR line naming the holder); runs
of other dts take other files and proceed.

A lease is stale when it was not refreshed for ``tables.lease_stale_minutes``, or when its
holder ran on this host and its process is gone (a SIGKILL). A stale lease is broken (renamed
away, then deleted) with a WARNING line naming it, and taken. Leases are reentrant within a
process: a pipeline run holds its dt's lease across steps, and each step's own take of it is
a no-op.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from embedlib.config import Config
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger
from embedlib.tables import hadoop_fs

log = get_logger(__name__)

_lock = threading.Lock()
# The leases this process holds, by (warehouse, database, dt): not by path, whose spelling
# changes once the database exists (the metastore's location against the warehouse setting).
_held: dict[tuple, Lease] = {}


class LeaseHeldError(EmbedlibError):
    """Another run holds the lease of this (database, dt)."""


@dataclass
class Lease:
    key: tuple
    path: str
    holder: dict
    count: int = 1
    stop: threading.Event = field(default_factory=threading.Event)


def lease_path(spark: SparkSession, cfg: Config, dt: str) -> str:
    """Where the lease of (tables.database, dt) lives: in the database's folder (as the
    metastore records it, whichever warehouse a run is configured with), or where the table
    layer will create it."""
    _dt.date.fromisoformat(dt)
    database = cfg.tables.database
    if spark.catalog.databaseExists(database):
        folder = spark.catalog.getDatabase(database).locationUri.rstrip("/")
    else:
        folder = f"{spark.conf.get('spark.sql.warehouse.dir').rstrip('/')}/{database}.db"
    return f"{folder}/_leases/dt={dt}.lease"


def describe(holder: dict) -> str:
    return (f"job {holder.get('job')!r}, pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('started')}")


def acquire(spark: SparkSession, cfg: Config, dt: str, job: str) -> Lease:
    """Take the lease of (database, dt) for ``job`` (again in this process: counted)."""
    key = (spark.conf.get("spark.sql.warehouse.dir"), cfg.tables.database, dt)
    with _lock:
        if key in _held:
            _held[key].count += 1
            return _held[key]
        path = lease_path(spark, cfg, dt)
        holder = {"job": job, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")}
        fs, jpath = hadoop_fs(spark, path)
        if not _create_exclusive(fs, jpath, json.dumps(holder)):
            current, age_s = _read(spark, fs, jpath)
            why = _stale_reason(current, age_s, cfg.tables.lease_stale_minutes)
            if why is None or not _break(spark, fs, jpath, path, current, why):
                raise LeaseHeldError(
                    f"dt={dt} of database {cfg.tables.database} is being written by another run "
                    f"({describe(current)}; lease {path}, refreshed {age_s:.0f}s ago): wait for it to "
                    f"end; a lease not refreshed for tables.lease_stale_minutes="
                    f"{cfg.tables.lease_stale_minutes:g} is broken by the next run")
            if not _create_exclusive(fs, jpath, json.dumps(holder)):
                current, _ = _read(spark, fs, jpath)
                raise LeaseHeldError(f"dt={dt} of database {cfg.tables.database}: the lease {path} was "
                                     f"taken by another run ({describe(current)}) as this one broke it")
        lease = _held[key] = Lease(key, path, holder)
    threading.Thread(target=_refresh, args=(spark, lease, cfg.tables.lease_refresh_seconds),
                     name=f"lease-{dt}", daemon=True).start()
    log.info("lease of %s dt=%s taken (%s)", cfg.tables.database, dt, path)
    return lease


def release(spark: SparkSession, lease: Lease) -> None:
    """Give back one take of ``lease``; the last one stops its refresh and deletes the file."""
    with _lock:
        lease.count -= 1
        if lease.count > 0:
            return
        del _held[lease.key]
        lease.stop.set()
        fs, jpath = hadoop_fs(spark, lease.path)
        current, _ = _read(spark, fs, jpath)
        if current == lease.holder:
            fs.delete(jpath, False)
        else:  # broken as stale and taken by another run meanwhile: that lease is not ours
            log.warning("the lease %s is no longer this run's (now %s); left as it is",
                        lease.path, describe(current) if current else "gone")


@contextlib.contextmanager
def held(spark: SparkSession, cfg: Config, dt: str, job: str) -> Iterator[Lease]:
    """``with held(spark, cfg, dt, job):`` the block runs holding the lease of dt."""
    lease = acquire(spark, cfg, dt, job)
    try:
        yield lease
    finally:
        release(spark, lease)


def _create_exclusive(fs, jpath, text: str) -> bool:
    """Create the file with ``text`` unless it exists, in one atomic move; whether it did."""
    fs.mkdirs(jpath.getParent())
    if fs.getScheme() == "file":
        try:
            fd = os.open(jpath.toUri().getPath(), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as out:
            out.write(text)
        return True
    try:
        out = fs.create(jpath, False)
    except Exception as exc:  # py4j: org.apache.hadoop.fs.FileAlreadyExistsException
        if "AlreadyExists" in str(exc) or fs.exists(jpath):
            return False
        raise
    out.write(text.encode())
    out.close()
    return True


def _read(spark: SparkSession, fs, jpath) -> tuple[dict, float]:
    """(holder, seconds since the last refresh) of a lease file; ({}, 0) when it is gone."""
    try:
        status = fs.getFileStatus(jpath)
        stream = fs.open(jpath)
    except Exception:  # py4j: FileNotFoundException (released meanwhile)
        return {}, 0.0
    try:
        text = spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
    try:
        holder = json.loads(text or "{}")
    except ValueError:
        holder = {"job": "unreadable lease file"}
    return holder, time.time() - status.getModificationTime() / 1000


def _stale_reason(holder: dict, age_s: float, stale_minutes: float) -> str | None:
    """Why the lease may be broken, or None while its holder may still run."""
    if not holder:
        return "released meanwhile"
    if age_s > stale_minutes * 60:
        return f"not refreshed for {age_s / 60:.1f} min (tables.lease_stale_minutes={stale_minutes:g})"
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return f"its process {holder['pid']} on this host is gone"
        except PermissionError:
            pass
    return None


def _break(spark: SparkSession, fs, jpath, path: str, holder: dict, why: str) -> bool:
    """Move a stale lease out of the way; whether it did. A rename: of two runs breaking one
    lease only one moves it, and a lease taken anew meanwhile (not the stale holder's) is put
    back."""
    if not holder:
        return True
    aside = jpath.suffix(f".broken-{uuid.uuid4().hex[:8]}")
    if not fs.rename(jpath, aside):
        return False
    if _read(spark, fs, aside)[0] != holder:
        fs.rename(aside, jpath)
        return False
    fs.delete(aside, False)
    log.warning("broke the stale lease %s of %s: %s", path, describe(holder), why)
    return True


def _refresh(spark: SparkSession, lease: Lease, every_s: float) -> None:
    """Touch the lease file every ``every_s`` seconds until it is released."""
    fs, jpath = hadoop_fs(spark, lease.path)
    while not lease.stop.wait(every_s):
        try:
            fs.setTimes(jpath, int(time.time() * 1000), -1)
        except Exception as exc:  # py4j: the file is gone (broken by another run) or unreachable
            log.warning("could not refresh the lease %s: %s", lease.path, str(exc).splitlines()[0])
