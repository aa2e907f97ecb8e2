"""The one table I/O layer: read inputs, write and read dt partitions of Hive tables.

Outputs are Hive tables over Parquet, partitioned by ``dt`` (a 'YYYY-MM-DD' string).
Writing a partition is stage-then-swap: the data goes to a fresh run folder that no reader
knows about, then one metastore operation points the partition at it. A reader sees the
old partition or the new one, never a half-written one; a crash before the swap leaves the
table as it was. Rewriting a dt replaces it, so reruns never append duplicates.

Retention: a run folder of a dt is deleted only when nothing points at it - not the
metastore (the partition's location now, or just before the last swap: readers in flight),
not the registry (the caller passes the registered locations as ``keep``) - and it is older
than the caller's grace period. The registry removes a published dt's orphans at once when
it registers that dt (embedlib/registry.py).
"""
from __future__ import annotations

import datetime as _dt
import re
import uuid
from collections.abc import Callable, Sequence

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, FloatType, StringType, StructField, StructType

from embedlib import arrow_io
from embedlib.config import InputConfig, TablesConfig
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger

log = get_logger(__name__)

PARTITION_COL = "dt"
# The extra column of a CSV input: the raw text of a malformed line, null on good lines.
MALFORMED_COL = "_malformed_line"


class TableError(EmbedlibError):
    """A table is missing, has the wrong schema, or an input cannot be read."""


# Every table name of the pipeline is built here, from the tables.* config keys.
TABLE_KINDS = ("sequences", "item_stats", "versions", "train_runs", "run_stats", "deltas", "neighbors")


def qualified(tables: TablesConfig, name: str) -> str:
    """``name`` in the pipeline's database (tables.database)."""
    return f"{tables.database}.{name}"


def table_name(tables: TablesConfig, kind: str) -> str:
    """The qualified name of one of the pipeline's tables, e.g. ``table_name(cfg.tables, "sequences")``."""
    if kind not in TABLE_KINDS:
        raise TableError(f"no table kind {kind!r} (kinds: {', '.join(TABLE_KINDS)})")
    return qualified(tables, getattr(tables, kind))


def embeddings_table(tables: TablesConfig, side: str, raw: bool = False) -> str:
    """The embeddings table of ``side`` (item, context, user): published, or raw as trained."""
    prefix = tables.raw_embeddings_prefix if raw else tables.embeddings_prefix
    return qualified(tables, f"{prefix}_{side}")


def read_input(spark: SparkSession, input_cfg: InputConfig) -> DataFrame:
    """The raw behaviour log, any schema, as configured (CSV: see ``_read_csv``)."""
    if input_cfg.format == "table":
        if not input_cfg.table:
            raise TableError("input.format is 'table' but input.table is not set")
        if not spark.catalog.tableExists(input_cfg.table):
            raise TableError(f"input table {input_cfg.table!r} does not exist")
        return spark.table(input_cfg.table)
    if not input_cfg.path:
        raise TableError(f"input.format is {input_cfg.format!r} but input.path is not set")
    if not path_exists(spark, input_cfg.path):
        raise TableError(f"input path {input_cfg.path!r} does not exist")
    if input_cfg.format == "parquet":
        return spark.read.parquet(input_cfg.path)
    return _read_csv(spark, input_cfg)


def _read_csv(spark: SparkSession, input_cfg: InputConfig) -> DataFrame:
    """Every column as a string exactly as written (no trimming), plus MALFORMED_COL.

    Quoting follows RFC 4180 with the configured quote and escape characters: a quoted
    field may hold the delimiter, escaped quotes and newlines. A line with more or fewer
    fields than the header is kept, its columns padded or cut, with its text in
    MALFORMED_COL, so the sequences step drops and counts it.

    multiLine (``input.csv_multiline``, see ``csv_multiline``) is what lets a record span
    lines; its cost: each file is parsed by one task. Without it Spark splits files, and a
    quoted field holding a newline becomes two malformed lines. Spark's CSV column pruning
    would skip the field-count check when a query reads only some columns: multiLine turns
    it off, and so does this reader otherwise (``spark.sql.csv.parser.columnPruning.enabled``).
    """
    multiline = csv_multiline(spark, input_cfg)
    if not multiline:
        spark.conf.set("spark.sql.csv.parser.columnPruning.enabled", "false")
    reader = (
        spark.read.option("header", input_cfg.csv_header)
        .option("sep", input_cfg.csv_delimiter)
        .options(quote=input_cfg.csv_quote, escape=input_cfg.csv_escape, multiLine=multiline,
                 ignoreLeadingWhiteSpace=False, ignoreTrailingWhiteSpace=False, mode="PERMISSIVE")
    )
    columns = reader.csv(input_cfg.path).columns  # the header (or _c0, _c1, ...) only
    if MALFORMED_COL in columns:
        raise TableError(f"input {input_cfg.path!r} has a column named {MALFORMED_COL!r}, "
                         "which the reader uses for malformed lines")
    schema = StructType([StructField(c, StringType()) for c in [*columns, MALFORMED_COL]])
    return reader.schema(schema).option("columnNameOfCorruptRecord", MALFORMED_COL).csv(input_cfg.path)


def csv_multiline(spark: SparkSession, input_cfg: InputConfig) -> bool:
    """Whether the CSV input is read with multiLine: ``input.csv_multiline``; ``auto``: when
    some line holds an odd number of unescaped quote characters (a quoted field that goes on
    to the next line leaves one), found by a splittable text pass that stops at the first."""
    if input_cfg.csv_multiline != "auto":
        return input_cfg.csv_multiline == "true"
    quote, escape = re.escape(input_cfg.csv_quote), re.escape(input_cfg.csv_escape)
    unescaped = quote if input_cfg.csv_escape == input_cfg.csv_quote else f"(?<!{escape}){quote}"
    line = F.col("value")
    quotes = F.length(line) - F.length(F.regexp_replace(line, unescaped, ""))
    spanning = spark.read.text(input_cfg.path).where(quotes % 2 == 1).limit(1).count() > 0
    log.info("input %s: %s (input.csv_multiline=auto)", input_cfg.path,
             "a quoted field spans lines, so each file is read by one task (multiLine)" if spanning
             else "no record spans lines, so files are split between tasks")
    return spanning


def table_exists(spark: SparkSession, table: str) -> bool:
    return spark.catalog.tableExists(table)


def list_partitions(spark: SparkSession, table: str) -> list[str]:
    """The dt values of ``table``, sorted; empty when the table does not exist."""
    if not table_exists(spark, table):
        return []
    rows = spark.sql(f"SHOW PARTITIONS {table}").collect()
    return sorted(r[0].split("=", 1)[1] for r in rows)


def find_partition(spark: SparkSession, table: str, dt: str) -> DataFrame | None:
    """Rows of partition ``dt`` (without the dt column), or None when there is none."""
    if dt not in list_partitions(spark, table):
        return None
    return spark.table(table).where(F.col(PARTITION_COL) == dt).drop(PARTITION_COL)


def read_partition(spark: SparkSession, table: str, dt: str) -> DataFrame:
    """Rows of partition ``dt`` (without the dt column); an error if it does not exist."""
    df = find_partition(spark, table, dt)
    if df is None:
        raise TableError(f"table {table} has no partition dt={dt}")
    return df


def write_partition(spark: SparkSession, df: DataFrame, table: str, dt: str,
                    keep: Sequence[str] = (), grace_hours: float = 0.0,
                    batch_fn: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
                    arrow: bool = False, schema: StructType | None = None) -> str:
    """Replace partition ``dt`` of ``table`` with ``df``, atomically; returns its folder.

    Afterwards the dt's other run folders are deleted, except the one replaced (readers in
    flight), those in ``keep`` (e.g. the locations the registry points at) and those
    younger than ``grace_hours``.

    ``batch_fn``: applied to each Arrow record batch of ``df`` as it is written (same
    columns out; e.g. vectors times a matrix), in the same pass. ``arrow``: the Parquet
    files are written by pyarrow in the tasks (``arrow_io.write_parts``: about half the
    time of Spark's writer for vector columns) where pyarrow can open the table's
    filesystem; elsewhere, and without ``arrow``, by Spark's writer. ``schema``: the rows'
    schema after ``batch_fn`` when it changes column types (the table's); default ``df``'s.
    """
    _dt.date.fromisoformat(dt)
    schema = df.schema if schema is None else schema
    if PARTITION_COL in schema.fieldNames():
        raise TableError(f"cannot write {table}: the frame already has a {PARTITION_COL!r} column")
    database, _, _name = table.partition(".")
    if not spark.catalog.databaseExists(database):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    root = _ensure_table(spark, schema, table)
    run_dir = f"{root}/{PARTITION_COL}={dt}/run={_run_id()}"
    if arrow and arrow_io.filesystem(run_dir) is None:
        log.info("%s: pyarrow cannot open %s, so Spark's Parquet writer writes it", table, run_dir)
        arrow = False
    if arrow:
        try:
            arrow_io.write_parts(df, run_dir, batch_fn, schema)
        except arrow_io.ExecutorFilesystemError as exc:
            log.warning("%s: %s, so Spark's Parquet writer writes it", table, exc)
            arrow = False
    if not arrow:
        if batch_fn is not None:
            df = df.mapInArrow(lambda batches: map(batch_fn, batches), schema)
        writer = df.write.mode("errorifexists")
        for key, value in _parquet_column_options(spark, df).items():
            writer = writer.option(key, value)
        writer.parquet(run_dir)
    spec = f"PARTITION ({PARTITION_COL}='{dt}')"
    previous = partition_location(spark, table, dt)
    if previous is not None:
        spark.sql(f"ALTER TABLE {table} {spec} SET LOCATION '{run_dir}'")
    else:
        spark.sql(f"ALTER TABLE {table} ADD {spec} LOCATION '{run_dir}'")
    spark.catalog.refreshTable(table)
    # run_dir is now the partition's location: no metastore lookup needed for the clean-up.
    _remove_runs(spark, f"{root}/{PARTITION_COL}={dt}", [run_dir, previous, *keep], grace_hours)
    log.info("wrote %s dt=%s -> %s", table, dt, run_dir)
    return run_dir


def _parquet_column_options(spark: SparkSession, df: DataFrame) -> dict:
    """Per-column Parquet writer settings: no dictionary for float vectors.

    Vector elements almost never repeat, so parquet-mr's dictionary attempt on them only
    costs time (about a tenth of a 1M x 128 write) before it falls back to plain encoding.
    """
    if spark.conf.get("spark.sql.parquet.writeLegacyFormat", "false").lower() == "true":
        return {}  # legacy list layout: other column paths; keep the defaults
    return {f"parquet.enable.dictionary#{f.name}.list.element": "false" for f in df.schema.fields
            if isinstance(f.dataType, ArrayType) and isinstance(f.dataType.elementType, (FloatType, DoubleType))}


def drop_partition(spark: SparkSession, table: str, dt: str) -> None:
    """Forget partition ``dt`` (the metastore entry; files are left for the next write)."""
    if dt in list_partitions(spark, table):
        spark.sql(f"ALTER TABLE {table} DROP PARTITION ({PARTITION_COL}='{dt}')")
        spark.catalog.refreshTable(table)


def partition_location(spark: SparkSession, table: str, dt: str) -> str | None:
    """The folder partition ``dt`` of ``table`` points at, or None when there is none."""
    if dt not in list_partitions(spark, table):
        return None
    return _described_location(spark, f"{table} PARTITION ({PARTITION_COL}='{dt}')")


def table_location(spark: SparkSession, table: str) -> str | None:
    """The root folder of ``table``, or None when there is no such table."""
    if not table_exists(spark, table):
        return None
    return _described_location(spark, table)


def _described_location(spark: SparkSession, what: str) -> str | None:
    """The Location row of ``DESCRIBE TABLE EXTENDED <what>`` (a table, or a table's partition)."""
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {what}").collect()
    return next((r.data_type for r in rows if r.col_name == "Location"), None)


def _ensure_table(spark: SparkSession, schema: StructType, table: str) -> str:
    """Create ``table`` with ``schema`` if missing, else check its schema; its root."""
    wanted = [(f.name, f.dataType.simpleString()) for f in schema.fields]
    if table_exists(spark, table):
        found = [(f.name, f.dataType.simpleString())
                 for f in spark.table(table).schema.fields if f.name != PARTITION_COL]
        if found != wanted and found == wanted[:len(found)]:
            # Columns added at the end by a newer release: older partitions read them as null.
            added = ", ".join(f"`{n}` {t}" for n, t in wanted[len(found):])
            spark.sql(f"ALTER TABLE {table} ADD COLUMNS ({added})")
            log.info("table %s: added columns %s", table, added)
            found = wanted
        if found != wanted:
            raise TableError(
                f"table {table} has columns {found}, the job writes {wanted}; "
                "drop or rename the table to change its schema"
            )
        return table_location(spark, table)
    warehouse = spark.conf.get("spark.sql.warehouse.dir").rstrip("/")
    database, _, name = table.partition(".")
    root = f"{warehouse}/{database}.db/{name}"
    columns = ", ".join(f"`{n}` {t}" for n, t in wanted)
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {table} ({columns}) "
        f"PARTITIONED BY ({PARTITION_COL} STRING) STORED AS PARQUET LOCATION '{root}'"
    )
    return table_location(spark, table)


def _run_id() -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{uuid.uuid4().hex[:8]}"


def hadoop_fs(spark: SparkSession, path: str):
    """(Hadoop FileSystem, Path) of ``path``: local, HDFS, S3, ... whatever its scheme says."""
    jvm = spark.sparkContext._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    return jpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), jpath


def path_exists(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` exists on its filesystem (local, HDFS, S3, ... via Hadoop)."""
    fs, jpath = hadoop_fs(spark, path)
    return bool(fs.exists(jpath)) or bool(fs.globStatus(jpath))


def remove_orphan_runs(spark: SparkSession, table: str, dt: str, keep: Sequence[str | None],
                       older_than_hours: float = 0.0) -> list[str]:
    """Delete the run folders of partition ``dt`` that are not in ``keep`` and are older
    than ``older_than_hours``; the partition's current location is always kept. Returns the
    deleted folder names."""
    root = table_location(spark, table)
    if root is None:
        return []
    return _remove_runs(spark, f"{root}/{PARTITION_COL}={dt}", [*keep, partition_location(spark, table, dt)],
                        older_than_hours)


def _remove_runs(spark: SparkSession, partition_dir: str, keep: Sequence[str | None],
                 older_than_hours: float) -> list[str]:
    """The folder work of remove_orphan_runs, for a caller that knows the partition's folder
    and its current location (write_partition: no metastore lookups).

    Only ``run=`` folders are candidates (what write_partition stages); locations are
    compared as whole qualified paths. When a kept location is the dt folder itself (a
    partition not written by write_partition), nothing is removed: its files are the data.
    """
    fs, jpath = hadoop_fs(spark, partition_dir)
    if not fs.exists(jpath):
        return []
    qualified_dir = fs.makeQualified(jpath).toString().rstrip("/")
    keep_paths = {fs.makeQualified(hadoop_fs(spark, k)[1]).toString().rstrip("/") for k in keep if k}
    if qualified_dir in keep_paths:
        log.info("%s is itself a partition's location: no run folder of it is removed", partition_dir)
        return []
    now = _dt.datetime.now(_dt.timezone.utc)
    removed = []
    for status in fs.listStatus(jpath):
        name = status.getPath().getName()
        if not (status.isDirectory() and name.startswith("run=")):
            continue
        age_hours = (now - _run_started(name, status.getModificationTime())).total_seconds() / 3600
        if status.getPath().toString().rstrip("/") in keep_paths or age_hours < older_than_hours:
            continue
        fs.delete(status.getPath(), True)
        removed.append(name)
    if removed:
        log.info("removed %d unreferenced run folder(s) of %s: %s", len(removed), partition_dir,
                 ", ".join(removed))
    return removed


def _run_started(name: str, modified_ms: int) -> _dt.datetime:
    """When a run folder was started: from its name (run=<UTC time>-<id>), else its mtime."""
    try:
        return _dt.datetime.strptime(name.split("=", 1)[1][:15], "%Y%m%dT%H%M%S").replace(
            tzinfo=_dt.timezone.utc)
    except (IndexError, ValueError):
        return _dt.datetime.fromtimestamp(modified_ms / 1000, _dt.timezone.utc)
