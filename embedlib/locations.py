"""Locations: the one reading of the path and URI strings that the pipeline, the manifests
and the lookup service pass around.

A location is a string as Hadoop's ``Path`` prints it and as the metastore and the registry
record it: ``/abs/path``, ``file:/abs/path``, ``file:///abs/path`` or
``scheme://authority/path``. It is NOT percent-encoded: ``my data 100%`` is a folder whose
name holds a space and a percent sign, and ``%20`` is three characters. Spark's
``inputFiles()`` gives URIs, which are percent-encoded: ``from_uri`` turns one into a
location. pyarrow's ``FileSystem.from_uri`` wants an encoded URI: ``filesystem`` encodes.
"""
from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from embedlib.log import get_logger

log = get_logger(__name__)

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?://(?P<authority>[^/]*))?(?P<path>.*)$")
_warned: set[tuple[str, str]] = set()  # (scheme, authority) whose filesystem failed, said once


def split(location: str) -> tuple[str, str, str] | None:
    """(scheme, authority, absolute path) of a location; None for a relative path.

    ``/abs/path`` is ``("file", "", "/abs/path")``.
    """
    if location.startswith("/"):
        return "file", "", location
    match = _SCHEME.match(location)
    if match is None or not match["path"].startswith("/"):
        return None
    return match["scheme"], match["authority"] or "", match["path"]


def absolute(location: str | Path) -> str:
    """``location`` with a relative local path made absolute (from the working folder)."""
    location = str(location)
    return location if split(location) is not None else str(Path(location).resolve())


def from_uri(uri: str) -> str:
    """The location of a percent-encoded URI (``file:///a%20b`` -> ``file:/a b``), as
    ``new Path(new URI(uri))`` in Hadoop."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme:
        return uri
    authority = f"//{parts.netloc}" if parts.netloc else ""
    return f"{parts.scheme}:{authority}{urllib.parse.unquote(parts.path)}"


def filesystem(location: str) -> tuple[pafs.FileSystem, str] | None:
    """pyarrow's filesystem and path for a location.

    Returns
    -------
    (pyarrow.fs.FileSystem, str) or None
        None where pyarrow cannot open the location: a relative path, a scheme pyarrow does
        not know (``s3a``, ``abfss``...), or one whose library is missing (libhdfs, libjvm).
        A failure other than a relative path is logged (WARNING, once per scheme and
        authority in a process) with pyarrow's reason, so a permissions or namenode error
        is never silent. A pure function of the string: tasks call it on the executors.
    """
    parts = split(location)
    if parts is None:
        return None
    scheme, authority, path = parts
    if scheme == "file":
        return pafs.LocalFileSystem(), path
    try:
        return pafs.FileSystem.from_uri(f"{scheme}://{authority}{urllib.parse.quote(path)}")
    except (pa.ArrowException, OSError, ValueError) as exc:
        if (scheme, authority) not in _warned:
            _warned.add((scheme, authority))
            log.warning("pyarrow cannot open %s://%s (%s: %s); Spark's reader and writer are used there",
                        scheme, authority, type(exc).__name__, exc)
        return None


def is_hidden(name: str) -> bool:
    """Whether Spark's file listing skips a file or folder of this name (metadata, staging)."""
    return name.startswith(".") or (name.startswith("_") and "=" not in name)
