"""Version manifests: one small JSON file per registered (dt, side), readable without Spark.

The registry is a Hive table; with the embedded Derby metastore a second process cannot open
it while a job runs, so the lookup service never asks it. ``registry.register`` writes, after
its registry partition, one manifest per side::

    <root>/<side>/dt=<dt>.<registration>.json   {"dt", "side", "location", "n_rows",
                                                 "fingerprint", "dim", "created_at", "registration"}

with ``<root>`` = ``serve.manifests``, by default ``<spark.warehouse_dir>/<database>.db/_manifests``,
and ``<registration>`` = ``<UTC time to the microsecond>Z-<random>``: every registration, a
rerun of a dt included, gets a file of its own. The newest version is the largest
(dt, registration); manifests written before registrations were named (``dt=<dt>.json``)
have an empty one, older than any other of their dt.

A rerun can never roll back what a reader sees: the new file is written under a temporary
name and renamed to its own name (Hadoop FileSystem from the JVM, so HDFS and S3 work as the
tables do); only then are the dt's older manifests removed. A reader in between sees both and
takes the newer. ``remove_manifests`` (``registry.unregister``) deletes a dt's manifests: the
service then falls back to the newest one left. The service lists them with pyarrow's
filesystem.
"""
from __future__ import annotations

import datetime as _dt
import json
import uuid
from dataclasses import asdict, dataclass, replace

from pyarrow import fs as pafs

from embedlib import locations
from embedlib.config import Config
from embedlib.errors import EmbedlibError

PREFIX, SUFFIX = "dt=", ".json"
SIDES = ("item", "context", "user")


class ManifestError(EmbedlibError):
    """A manifest is missing, unreadable or incomplete."""


@dataclass(frozen=True)
class Manifest:
    """Where a registered version's data is and what it must hold.

    location : the registered run folder (a path or URI)
    n_rows, fingerprint : the registry's row count and fingerprint (``integrity``; None for
    versions registered before fingerprints were recorded)
    registration : what orders two registrations of one dt ("" in manifests written before
    registrations were named)
    """

    dt: str
    side: str
    location: str
    n_rows: int
    fingerprint: str | None
    dim: int
    created_at: str
    registration: str = ""
    # The version's precomputed neighbours (build_neighbors adds them by a new registration
    # of the dt): {"location", "k", "metric", "n_rows"}; None: exact search only.
    neighbors: dict | None = None

    @property
    def key(self) -> tuple[str, str]:
        """What orders versions: a larger key is newer (a rerun of a dt is newer than it)."""
        return self.dt, self.registration

    @property
    def file_name(self) -> str:
        return f"{PREFIX}{self.dt}.{self.registration}{SUFFIX}" if self.registration \
            else f"{PREFIX}{self.dt}{SUFFIX}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            raw = json.loads(text)
            optional = {"registration", "neighbors"}
            return cls(**{name: raw[name] for name in cls.__dataclass_fields__
                          if name in raw or name not in optional})
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"manifest {where} is not a valid version manifest: {exc!r}") from None


def manifest_root(cfg: Config) -> str:
    """The manifests folder of ``cfg`` (a local path or a URI)."""
    if cfg.serve.manifests:
        return cfg.serve.manifests.rstrip("/")
    warehouse = locations.absolute(cfg.spark.warehouse_dir)
    return f"{warehouse.rstrip('/')}/{cfg.tables.database}.db/_manifests"


def new_registration() -> str:
    """A registration name that sorts after every earlier one (UTC time, then random)."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%S%f')}Z-{uuid.uuid4().hex[:8]}"


def from_record(dt: str, record, registration: str = "") -> Manifest:
    """The manifest of a ``registry.VersionRecord`` registered for ``dt``."""
    created = record.created_at or _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    return Manifest(dt=dt, side=record.side, location=record.location, n_rows=int(record.n_rows),
                    fingerprint=record.fingerprint, dim=int(record.dim),
                    created_at=created.isoformat(timespec="seconds"), registration=registration)


def write_manifests(spark, cfg: Config, dt: str, records: list) -> list[str]:
    """Write the manifest of each record (one per side) under a name of its own, then remove
    the dt's older manifests; their paths."""
    registration = new_registration()
    return [_put(spark, cfg, from_record(dt, record, registration)) for record in records]


def add_neighbors(spark, cfg: Config, dt: str, side: str, neighbors: dict) -> str:
    """A new registration of ``dt`` (``side``) whose manifest also names its precomputed
    neighbours (``Manifest.neighbors``): the service loads both and swaps them together."""
    current = read_manifest(manifest_root(cfg), side, dt)
    return _put(spark, cfg, replace(current, registration=new_registration(), neighbors=neighbors))


def _put(spark, cfg: Config, m: Manifest) -> str:
    """Write manifest ``m`` atomically under its own name, then remove the older manifests of
    its dt; its path."""
    from embedlib import tables  # Spark's side only: readers of manifests need no pyspark

    jvm = spark.sparkContext._jvm
    fs, folder = tables.hadoop_fs(spark, f"{manifest_root(cfg)}/{m.side}")
    fs.mkdirs(folder)
    final = jvm.org.apache.hadoop.fs.Path(folder, m.file_name)
    temp = jvm.org.apache.hadoop.fs.Path(folder, f"_tmp-{uuid.uuid4().hex}{SUFFIX}")
    stream = fs.create(temp, True)
    try:
        stream.write(bytearray(m.to_json().encode("utf-8")))
    finally:
        stream.close()
    if not fs.rename(temp, final):
        raise ManifestError(f"could not rename {temp} to {final}")
    # Only now the older manifests of dt go: a reader always finds one of dt.
    _delete_manifests(fs, folder, m.dt, keep=m.file_name)
    return str(final)


def remove_manifests(spark, cfg: Config, dt: str) -> list[str]:
    """Delete every manifest of ``dt`` (all sides): the version is no longer served; the
    names of the files deleted."""
    from embedlib import tables

    removed = []
    for side in SIDES:
        fs, folder = tables.hadoop_fs(spark, f"{manifest_root(cfg)}/{side}")
        if fs.exists(folder):
            removed += _delete_manifests(fs, folder, dt, keep=None)
    return removed


def _delete_manifests(fs, folder, dt: str, keep: str | None) -> list[str]:
    """Delete the manifests of ``dt`` in ``folder`` (Hadoop) except the file named ``keep``."""
    removed = []
    for status in fs.listStatus(folder):
        name = status.getPath().getName()
        if name != keep and _parse_name(name)[0] == dt:
            fs.delete(status.getPath(), False)
            removed.append(name)
    return removed


def _parse_name(name: str) -> tuple[str | None, str]:
    """(dt, registration) of a manifest file name; (None, "") for any other file."""
    if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
        return None, ""
    dt, _, registration = name[len(PREFIX):-len(SUFFIX)].partition(".")
    return dt, registration


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    located = locations.filesystem(locations.absolute(root))
    if located is None:
        raise ManifestError(f"pyarrow cannot open the manifests folder {root} (serve.manifests)")
    return located


def _names(root: str, side: str) -> dict[tuple[str, str], str]:
    """{(dt, registration): file name} of the manifests of ``side``."""
    filesystem, path = _filesystem(root)
    infos = filesystem.get_file_info(pafs.FileSelector(f"{path}/{side}", allow_not_found=True))
    return {key: i.base_name for i in infos if i.is_file and (key := _parse_name(i.base_name))[0]}


def list_dts(root: str, side: str) -> list[str]:
    """The dts that have a manifest for ``side``, sorted; empty when there is none."""
    return sorted({dt for dt, _ in _names(root, side)})


def _read(root: str, side: str, name: str) -> Manifest | None:
    """The manifest in file ``name``; None when it is gone (a rerun removed it meanwhile)."""
    filesystem, path = _filesystem(root)
    where = f"{path}/{side}/{name}"
    try:
        with filesystem.open_input_stream(where) as stream:
            text = stream.read().decode("utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {where}: {exc}") from None
    return Manifest.from_json(text, where)


def _newest(root: str, side: str, dt: str | None) -> Manifest | None:
    """The newest manifest of ``side`` (of ``dt`` when given); None when there is none. A
    file removed between the listing and the read (a rerun replaced it) means: list again."""
    for _ in range(5):
        names = {key: name for key, name in _names(root, side).items() if dt is None or key[0] == dt}
        if not names:
            return None
        found = _read(root, side, names[max(names)])
        if found is not None:
            return found
    raise ManifestError(f"the manifests under {root}/{side} keep changing under the reader")


def read_manifest(root: str, side: str, dt: str) -> Manifest:
    """The manifest of the newest registration of ``dt``."""
    found = _newest(root, side, dt)
    if found is None:
        raise ManifestError(f"no manifest for version {dt} ({side}) under {root}/{side}")
    return found


def latest_manifest(root: str, side: str) -> Manifest:
    """The manifest of the newest registration of the newest dt of ``side``."""
    found = _newest(root, side, None)
    if found is None:
        raise ManifestError(f"no version manifest under {root}/{side} (is a version registered "
                            "since manifests were introduced?)")
    return found
