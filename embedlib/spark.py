"""The one SparkSession factory: every job and test gets its session here, from config.

With the embedded Derby metastore, one process at a time may use a metastore folder. The
factory takes an exclusive OS file lock (``<metastore_dir>.lock``) before Spark starts, so a
second job on the same warehouse stops at once with one clear line instead of failing
minutes later inside Derby; the OS releases the lock when the process ends, crash or not.
"""
from __future__ import annotations

import atexit
import datetime as _dt
import fcntl
import os
import shutil
import socket
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import IO

from pyspark.sql import SparkSession

from embedlib.config import SparkConfig
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger

log = get_logger(__name__)

# Lock files this process holds, by path: open for the life of the process.
_locks: dict[str, IO] = {}
_scratch: str | None = None  # this process's scratch folder (see _process_scratch_dir)


class MetastoreLockedError(EmbedlibError):
    """Another job holds the embedded metastore of this warehouse."""


def lock_metastore(metastore_dir: str | Path, job: str) -> Path:
    """Take the exclusive lock of an embedded metastore folder (again: a no-op); its path."""
    metastore = Path(metastore_dir).resolve()
    path = metastore.parent / f"{metastore.name}.lock"
    if str(path) in _locks:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "a process that did not say"
        handle.close()
        raise MetastoreLockedError(
            f"the embedded metastore {metastore} is in use by another job ({holder}); Derby "
            "lets one process use it at a time: wait for that job, or give this one a metastore "
            "of its own with --set spark.metastore_dir=DIR (or a shared Hive metastore: "
            "spark.hive_metastore_uris)") from None
    handle.seek(0)
    handle.truncate()
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    handle.write(f"{job!r}, pid {os.getpid()} on {socket.gethostname()}, since {started}\n")
    handle.flush()
    _locks[str(path)] = handle
    return path


def spark_conf(cfg: SparkConfig) -> dict[str, str]:
    """The spark.* settings derived from config (exposed for tests and spark-submit docs)."""
    warehouse = Path(cfg.warehouse_dir).resolve()
    log4j = Path(str(resources.files("embedlib") / "resources" / "log4j2.properties"))
    # Inside a --py-files zip the file is not on disk; spark-submit's own options apply then.
    java_opts = [f"-Dlog4j2.configurationFile=file:{log4j}"] if log4j.is_file() else []
    conf = {
        "spark.sql.warehouse.dir": str(warehouse),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.ui.enabled": str(cfg.ui_enabled).lower(),
        "spark.driver.memory": cfg.driver_memory,
        "spark.ui.showConsoleProgress": "false",
    }
    if cfg.hive_metastore_uris:
        conf["spark.hadoop.hive.metastore.uris"] = cfg.hive_metastore_uris
    else:
        metastore = Path(cfg.metastore_dir).resolve()
        metastore.parent.mkdir(parents=True, exist_ok=True)
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={metastore};create=true"
        )
        java_opts.append(f"-Dderby.system.home={metastore.parent}")
    conf["spark.driver.extraJavaOptions"] = " ".join(map(java_option, java_opts))
    conf.update({str(k): str(v) for k, v in cfg.extra.items()})
    return conf


def java_option(option: str) -> str:
    """``option`` quoted for Spark's Java options string, which Spark splits at spaces unless
    quoted (a path with a space would become two arguments, the second taken for the main
    class): double quotes, with backslash and double quote escaped."""
    escaped = option.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _process_scratch_dir() -> str:
    global _scratch
    if _scratch is None:
        _scratch = tempfile.mkdtemp(prefix="embedlib-")
        atexit.register(shutil.rmtree, _scratch, True)
    return _scratch


def get_spark(cfg: SparkConfig, app_name: str | None = None) -> SparkSession:
    """Start (or reuse) the SparkSession described by ``cfg``, with Hive support."""
    if not cfg.hive_metastore_uris:
        lock_metastore(cfg.metastore_dir, app_name or cfg.app_name)
    # Executors must run the same Python as the driver (a .venv under spark-submit too).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name or cfg.app_name)
    # Under spark-submit the JVM is already up (its gateway port is in the environment) and
    # its --master wins; config's master applies only to a plain `python jobs/...` start.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(cfg.master)
    conf = spark_conf(cfg)
    # Hive's session folder for downloaded resources defaults to an empty /tmp/<id>_resources
    # that nobody removes; keep it in a folder of this process, removed when it exits.
    conf.setdefault("spark.hadoop.hive.downloaded.resources.dir",
                    f"{_process_scratch_dir()}/${{hive.session.id}}_resources")
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    log.info("spark %s on %s, warehouse %s", spark.version, spark.sparkContext.master,
             spark.conf.get("spark.sql.warehouse.dir"))
    return spark

