"""Version manifests: one small JSON file per registered (dt, side), readable without Spark.

The registry is a Hive table; with the embedded Derby metastore a second process cannot open
it while a job runs, so the lookup service never asks it. ``registry.register`` writes, after
its registry partition, one manifest per side::

    <root>/<side>/dt=<dt>.json   {"dt", "side", "location", "n_rows", "fingerprint", "dim",
                                  "created_at"}

with ``<root>`` = ``serve.manifests``, by default ``<spark.warehouse_dir>/<database>.db/_manifests``.
The file is written under a temporary name and renamed (Hadoop FileSystem from the JVM, so
HDFS and S3 work as the tables do); a reader sees the old manifest or the new one. The
service lists them with pyarrow's filesystem and serves the newest dt.
"""
from __future__ import annotations

import datetime as _dt
import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from pyarrow import fs as pafs

from embedlib.config import Config
from embedlib.errors import EmbedlibError

PREFIX, SUFFIX = "dt=", ".json"


class ManifestError(EmbedlibError):
    """A manifest is missing, unreadable or incomplete."""


@dataclass(frozen=True)
class Manifest:
    """Where a registered version's data is and what it must hold.

    location : the registered run folder (a path or URI)
    n_rows, fingerprint : the registry's row count and ``integrity.ids_fingerprint`` of the ids
    (fingerprint None for versions registered before fingerprints were recorded)
    """

    dt: str
    side: str
    location: str
    n_rows: int
    fingerprint: str | None
    dim: int
    created_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            raw = json.loads(text)
            return cls(**{name: raw[name] for name in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"manifest {where} is not a valid version manifest: {exc!r}") from None


def manifest_root(cfg: Config) -> str:
    """The manifests folder of ``cfg`` (a local path or a URI)."""
    if cfg.serve.manifests:
        return cfg.serve.manifests.rstrip("/")
    warehouse = cfg.spark.warehouse_dir
    if "://" not in warehouse:
        warehouse = str(Path(warehouse).resolve())
    return f"{warehouse.rstrip('/')}/{cfg.tables.database}.db/_manifests"


def file_name(dt: str) -> str:
    return f"{PREFIX}{dt}{SUFFIX}"


def from_record(dt: str, record) -> Manifest:
    """The manifest of a ``registry.VersionRecord`` registered for ``dt``."""
    created = record.created_at or _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    return Manifest(dt=dt, side=record.side, location=record.location, n_rows=int(record.n_rows),
                    fingerprint=record.fingerprint, dim=int(record.dim),
                    created_at=created.isoformat(timespec="seconds"))


def write_manifests(spark, cfg: Config, dt: str, records: list) -> list[str]:
    """Write the manifest of each record (one per side) atomically; their paths."""
    from embedlib import tables  # Spark's side only: readers of manifests need no pyspark

    jvm = spark.sparkContext._jvm
    written = []
    for record in records:
        fs, folder = tables.hadoop_fs(spark, f"{manifest_root(cfg)}/{record.side}")
        fs.mkdirs(folder)
        final = jvm.org.apache.hadoop.fs.Path(folder, file_name(dt))
        temp = jvm.org.apache.hadoop.fs.Path(folder, f"_tmp-{uuid.uuid4().hex}{SUFFIX}")
        stream = fs.create(temp, True)
        try:
            stream.write(bytearray(from_record(dt, record).to_json().encode("utf-8")))
        finally:
            stream.close()
        # Hadoop's rename does not replace: a rerun of dt removes the old manifest first
        # (a reader in that instant sees the previous dt as the newest, not a broken file).
        if fs.exists(final):
            fs.delete(final, False)
        if not fs.rename(temp, final):
            raise ManifestError(f"could not rename {temp} to {final}")
        written.append(str(final))
    return written


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in root or root.startswith("file:"):
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), root


def list_dts(root: str, side: str) -> list[str]:
    """The dts that have a manifest for ``side``, sorted; empty when there is none."""
    filesystem, path = _filesystem(root)
    infos = filesystem.get_file_info(pafs.FileSelector(f"{path}/{side}", allow_not_found=True))
    return sorted(i.base_name[len(PREFIX):-len(SUFFIX)] for i in infos
                  if i.is_file and i.base_name.startswith(PREFIX) and i.base_name.endswith(SUFFIX))


def read_manifest(root: str, side: str, dt: str) -> Manifest:
    filesystem, path = _filesystem(root)
    where = f"{path}/{side}/{file_name(dt)}"
    try:
        with filesystem.open_input_stream(where) as stream:
            text = stream.read().decode("utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise ManifestError(f"no manifest for version {dt} ({side}) at {where}: {exc}") from None
    return Manifest.from_json(text, where)


def latest_manifest(root: str, side: str) -> Manifest:
    """The manifest of the newest registered dt of ``side``."""
    dts = list_dts(root, side)
    if not dts:
        raise ManifestError(f"no version manifest under {root}/{side} (is a version registered "
                            "since manifests were introduced?)")
    return read_manifest(root, side, dts[-1])
