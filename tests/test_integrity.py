"""Integrity of published versions: fingerprints, damaged parents, show_versions' exit code."""
import glob
import importlib.util
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from embedlib import integrity, registry, tables
from embedlib.cli import run_job
from embedlib.steps import stabilize as step
from tests.helpers import REPO, write_vectors

D1, D2 = "2024-06-01", "2024-06-02"
ODD_IDS = ["a", "é", "x\ny", " padded ", 'q"uote', "", "日本"]


def test_spark_and_python_fingerprints_agree(spark):
    df = spark.createDataFrame([(i,) for i in ODD_IDS], "id string")
    n, fingerprint = integrity.counts(df.repartition(3), like=integrity.PREFIX)
    assert (n, fingerprint) == (len(ODD_IDS), integrity.ids_fingerprint(ODD_IDS))
    assert integrity.ids_fingerprint(ODD_IDS[:-1]) != fingerprint
    assert integrity.ids_fingerprint(ODD_IDS[::-1]) == fingerprint  # order-independent


def test_spark_and_python_row_fingerprints_agree_and_see_any_changed_value(spark):
    vectors = np.random.default_rng(4).standard_normal((len(ODD_IDS), 3)).astype(np.float32)
    df = spark.createDataFrame([(i, v.tolist()) for i, v in zip(ODD_IDS, vectors)], "id string, vector array<float>")
    n, fingerprint = integrity.counts(df.repartition(3))
    assert (n, fingerprint) == (len(ODD_IDS), integrity.rows_fingerprint(ODD_IDS, vectors))
    assert fingerprint.startswith("rows64:")
    assert integrity.rows_fingerprint(ODD_IDS[::-1], vectors[::-1]) == fingerprint  # order-independent
    negated, swapped, nudged = vectors.copy(), vectors.copy(), vectors.copy()
    negated[2] *= -1
    swapped[[0, 1]] = swapped[[1, 0]]  # the same vectors, paired with other ids
    nudged[4, 1] = np.nextafter(nudged[4, 1], np.float32(9))
    for damaged in (negated, swapped, nudged):
        assert integrity.rows_fingerprint(ODD_IDS, damaged) != fingerprint
    # a version registered with an id-only fingerprint keeps its id-only check
    assert integrity.counts(df, like="crc32sum:1") == (len(ODD_IDS), integrity.ids_fingerprint(ODD_IDS))
    assert integrity.fingerprint_like("crc32sum:1", ODD_IDS, negated) == integrity.ids_fingerprint(ODD_IDS)


def test_the_service_refuses_a_version_with_a_vector_negated_in_place(tmp_path):
    from embedlib.config import ServeConfig
    from embedlib.serving.follow import load_version
    from embedlib.serving.loadtest import write_version

    ids = [f"i{j}" for j in range(30)]
    vectors = np.random.default_rng(5).standard_normal((30, 4)).astype(np.float32)
    m = write_version(str(tmp_path / "m"), D1, tmp_path / "v", ids, vectors)
    assert len(load_version(m, ServeConfig(backend="numpy")).index) == 30
    negate_one_vector(str(tmp_path / "v"))
    with pytest.raises(integrity.IntegrityError, match=r"is damaged: row \(ids and vectors\) fingerprint"):
        load_version(m, ServeConfig(backend="numpy"))
    old = write_version(str(tmp_path / "m"), D2, tmp_path / "v", ids, vectors,
                        fingerprint=integrity.ids_fingerprint(ids))  # registered before: ids only
    assert len(load_version(old, ServeConfig(backend="numpy")).index) == 30


def test_check_names_each_difference():
    integrity.check("v", 3, "crc32sum:5", 3, "crc32sum:5")
    integrity.check("v", 3, None, 3, "crc32sum:9")  # registered before fingerprints: rows only
    with pytest.raises(integrity.IntegrityError, match=r"v is damaged: 2 rows where the registry recorded 3; "
                                                       r"id fingerprint crc32sum:4 where .* crc32sum:5"):
        integrity.check("v", 3, "crc32sum:5", 2, "crc32sum:4")


def damage(location: str, drop: int = 0, truncate: bool = False) -> None:
    """Rewrite the version's Parquet file with ``drop`` rows fewer (a lost part of the data),
    or cut it short (a broken copy)."""
    (path,) = [p for p in glob.glob(location.removeprefix("file:") + "/*.parquet")
               if pq.ParquetFile(p).metadata.num_rows]
    if truncate:
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    else:
        pq.write_table(pq.read_table(path).slice(drop), path)
    crc = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.crc")
    if os.path.exists(crc):
        os.remove(crc)  # Hadoop's checksum of the old bytes


def negate_one_vector(location: str) -> None:
    """Negate the vector of the first row in place: ids, row count and files intact."""
    (path,) = [p for p in glob.glob(location.removeprefix("file:") + "/*.parquet")
               if pq.ParquetFile(p).metadata.num_rows]
    table = pq.read_table(path)
    vectors = table.column("vector").to_pylist()
    vectors[0] = [-v for v in vectors[0]]
    column = pa.array(vectors, table.schema.field("vector").type)
    pq.write_table(table.set_column(table.schema.get_field_index("vector"), "vector", column), path)
    crc = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.crc")
    if os.path.exists(crc):
        os.remove(crc)


def two_versions(spark, cfg_factory, tmp_path, **publish):
    x = np.random.default_rng(8).normal(size=(50, 4))
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": write_vectors(tmp_path / "1.parquet", x)}},
                      publish=publish)
    step.run(spark, cfg, D1)
    cfg.stabilize.items.path = write_vectors(tmp_path / "2.parquet", x + 0.01)
    return cfg


@pytest.mark.slow
def test_damaged_parent_is_an_error_naming_it(spark, cfg_factory, tmp_path):
    cfg = two_versions(spark, cfg_factory, tmp_path)
    damage(registry.registered_locations(spark, cfg, D1)["item"], drop=15)
    with pytest.raises(integrity.IntegrityError,
                       match=rf"version {D1} \(item\) .* is damaged: 35 rows where the registry recorded 50.*"
                             r"publish.on_damaged_parent=new_root"):
        step.run(spark, cfg, D2)
    assert registry.registered_dts(spark, cfg) == [D1]  # nothing published on a damaged parent
    rows = registry.describe_versions(spark, cfg)
    assert rows[0]["rows_read"] == 35 and "35 rows where the registry recorded 50" in rows[0]["problem"]
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"spark": {"warehouse_dir": cfg.spark.warehouse_dir,
                                              "master": cfg.spark.master},
                                    "tables": {"database": cfg.tables.database}}))
    spec = importlib.util.spec_from_file_location("show_versions", REPO / "jobs" / "show_versions.py")
    show_versions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(show_versions)
    assert run_job(show_versions.main, ["--conf", str(conf)]) == 2
    damage(registry.registered_locations(spark, cfg, D1)["item"], truncate=True)
    with pytest.raises(integrity.IntegrityError, match=rf"version {D1} \(item\) .* cannot be read: "):
        step.run(spark, cfg, D2)


@pytest.mark.slow
def test_a_vector_negated_in_place_is_damage_to_show_versions_and_the_next_dt(spark, cfg_factory, tmp_path):
    cfg = two_versions(spark, cfg_factory, tmp_path)
    negate_one_vector(registry.registered_locations(spark, cfg, D1)["item"])
    rows = registry.describe_versions(spark, cfg)
    assert rows[0]["rows_read"] == 50 and "row (ids and vectors) fingerprint" in rows[0]["problem"]
    with pytest.raises(integrity.IntegrityError, match=rf"version {D1} \(item\) .* is damaged: row"):
        step.run(spark, cfg, D2)


@pytest.mark.slow
def test_damaged_parent_can_start_a_new_root(spark, cfg_factory, tmp_path):
    cfg = two_versions(spark, cfg_factory, tmp_path, on_damaged_parent="new_root")
    damage(registry.registered_locations(spark, cfg, D1)["item"], drop=1)
    summary = step.run(spark, cfg, D2)
    assert summary["parent_dt"] is None and summary["root_reason"].startswith(f"parent damaged: version {D1}")
    record = registry.read_version(spark, cfg, D2)["item"]
    assert record.root and "49 rows where the registry recorded 50" in record.root_reason
    df, _ = registry.read_published(spark, cfg, D2, "item")  # the new root itself is intact
    assert df.count() == 50


def test_registry_without_fingerprint_column_is_migrated(spark, cfg_factory):
    cfg = cfg_factory()
    table = tables.table_name(cfg.tables, "versions")
    old_schema = registry.REGISTRY_SCHEMA.removesuffix(', "\n    "fingerprint string').rsplit(", fingerprint", 1)[0]
    row = registry.VersionRecord("item", 2, 0, 0, None, True, "r", "none", {}, np.eye(2), location="/x").to_row()[:-1]
    tables.write_partition(spark, spark.createDataFrame([row], old_schema), table, D1)
    assert registry.read_version(spark, cfg, D1)["item"].fingerprint is None
    new = registry.VersionRecord("item", 2, 0, 0, None, True, "r", "none", {}, np.eye(2), location="/y",
                                 fingerprint="crc32sum:1")
    tables.write_partition(spark, spark.createDataFrame([new.to_row()], registry.REGISTRY_SCHEMA), table, D2)
    assert registry.read_version(spark, cfg, D1)["item"].fingerprint is None
    assert registry.read_version(spark, cfg, D2)["item"].fingerprint == "crc32sum:1"
