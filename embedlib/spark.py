"""The one SparkSession factory: every job and test gets its session here, from config."""
from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

from pyspark.sql import SparkSession

from embedlib.config import SparkConfig
from embedlib.log import get_logger

log = get_logger(__name__)


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
    conf["spark.driver.extraJavaOptions"] = " ".join(java_opts)
    conf.update({str(k): str(v) for k, v in cfg.extra.items()})
    return conf


def get_spark(cfg: SparkConfig, app_name: str | None = None) -> SparkSession:
    """Start (or reuse) the SparkSession described by ``cfg``, with Hive support."""
    # Executors must run the same Python as the driver (a .venv under spark-submit too).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name or cfg.app_name)
    # Under spark-submit the JVM is already up (its gateway port is in the environment) and
    # its --master wins; config's master applies only to a plain `python jobs/...` start.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(cfg.master)
    for key, value in spark_conf(cfg).items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    log.info("spark %s on %s, warehouse %s", spark.version, spark.sparkContext.master,
             spark.conf.get("spark.sql.warehouse.dir"))
    return spark

