"""Which code ran: the git commit of the package, from the checkout or from the built zip.

In a checkout git answers. Inside the spark-submit zip (`make package`) there is no checkout
to ask - the package is a zip entry, not a folder - so scripts/package.py asks git when it
builds the zip and writes the answer into it as ``embedlib/_build_info.json`` (generated
into the zip only, never committed). Only the standard library here: package.py imports
this module with a plain Python.
"""
from __future__ import annotations

import json
import subprocess
from importlib import resources
from pathlib import Path

BUILD_INFO = "_build_info.json"


def git_commit(folder: Path) -> dict | None:
    """``{"commit": short sha, "dirty": bool}`` of the checkout holding ``folder``.

    dirty: a file under ``folder`` differs from the commit (changed, or not tracked yet and
    not ignored). None when ``folder`` is not in a git checkout or git is missing.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=folder, timeout=10).stdout.strip()
    try:
        return {"commit": git("rev-parse", "--short", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--", "."))}
    except (OSError, subprocess.SubprocessError):
        return None


def build_info() -> dict | None:
    """The build info that scripts/package.py wrote into the zip; None outside a built zip."""
    try:
        return json.loads((resources.files("embedlib") / BUILD_INFO).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def version_label(version: str, info: dict | None) -> str:
    """``version``, plus ``+<commit>`` and ``.dirty`` when they are known (PEP 440 local part)."""
    if not info or not info.get("commit"):
        return version
    return f"{version}+{info['commit']}" + (".dirty" if info.get("dirty") else "")
