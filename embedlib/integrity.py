"""Integrity of published versions: a row count and an order-independent fingerprint of the ids.

The fingerprint of a set of ids is ``"crc32sum:<S>"``, where S is the sum over all rows of
CRC-32 of the id's UTF-8 bytes (a 64-bit sum: exact up to 2**31 rows). It is cheap (one pass
over the id column, no sort, no shuffle), the same whatever the row or file order, and it
changes when rows are lost, added or duplicated, or when an id is altered. It is not a
cryptographic hash: it guards against damage (a lost file, a truncated copy), not against
someone who forges data. Spark computes it with ``F.crc32``; a Spark-free reader (the
lookup service) with ``zlib.crc32``; both give the same value (tested).
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from embedlib.errors import EmbedlibError

PREFIX = "crc32sum:"


class IntegrityError(EmbedlibError):
    """Published data does not match what its registry row recorded (lost or altered rows)."""


def fingerprint_sum(id_col: str = "id") -> Column:
    """Spark aggregate: the sum of CRC-32 of the ids' UTF-8 bytes (format with ``as_text``)."""
    return F.sum(F.crc32(F.col(id_col).cast("binary")))


def as_text(crc_sum: int | None) -> str:
    return f"{PREFIX}{int(crc_sum or 0)}"


def ids_fingerprint(ids: Iterable[str]) -> str:
    """The fingerprint of ``ids`` (Python strings), without Spark."""
    return as_text(sum(zlib.crc32(i.encode("utf-8")) for i in ids))


def counts(df: DataFrame, id_col: str = "id") -> tuple[int, str]:
    """(rows, fingerprint) of ``df``: one job that reads only the id column."""
    row = df.agg(F.count(F.lit(1)).alias("n"), fingerprint_sum(id_col).alias("s")).first()
    return int(row.n), as_text(row.s)


def check(what: str, expected_rows: int, expected_fingerprint: str | None,
          rows: int, fingerprint: str) -> None:
    """Raise IntegrityError naming ``what`` and each difference; a None fingerprint (a
    version registered before fingerprints were recorded) checks the row count only."""
    problems = []
    if rows != expected_rows:
        problems.append(f"{rows} rows where the registry recorded {expected_rows}")
    if expected_fingerprint and fingerprint != expected_fingerprint:
        problems.append(f"id fingerprint {fingerprint} where the registry recorded {expected_fingerprint}")
    if problems:
        raise IntegrityError(f"{what} is damaged: " + "; ".join(problems))
