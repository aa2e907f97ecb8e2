"""Build dist/embedlib.zip: the embedlib package with its resources, for spark-submit --py-files.

Example: python scripts/package.py --out dist/embedlib.zip   (what `make package` runs)
Only the package's source and resource files go in (no __pycache__), with fixed timestamps,
so the same source at the same commit always gives the same bytes. One file is generated
into the zip only: embedlib/_build_info.json, the checkout's git commit and whether embedlib/
differs from it (dirty), which registry.code_version() records - inside a zip there is no
git to ask. The driver and the executors import embedlib from the zip; its dependencies
(numpy, pyarrow, gensim, ...) come from the Python that runs them (spark.pyspark.python),
as the README explains.
"""
import argparse
import json
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from embedlib import __version__, provenance  # noqa: E402  (standard library only)

PACKAGE = "embedlib"
# Zip entries need a date; a fixed one keeps the archive reproducible.
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def package_files(root: Path = REPO) -> list[Path]:
    """The files of the package, relative to ``root``, in a stable order."""
    return sorted(p.relative_to(root) for p in (root / PACKAGE).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
                  and p.name != provenance.BUILD_INFO)


def build_zip(out: Path, root: Path = REPO) -> tuple[Path, dict | None]:
    """Write the zip; returns it and the build info written into it (None outside git)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    build_info = provenance.git_commit(root / PACKAGE)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in package_files(root):
            _write_entry(zf, rel.as_posix(), (root / rel).read_bytes())
        if build_info is not None:
            _write_entry(zf, f"{PACKAGE}/{provenance.BUILD_INFO}",
                         json.dumps(build_info, sort_keys=True).encode())
    tmp.replace(out)  # a half-written zip is never left under the final name
    return out, build_info


def _write_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "dist" / f"{PACKAGE}.zip",
                        help="zip to write (default dist/embedlib.zip)")
    args = parser.parse_args(argv)
    out, build_info = build_zip(args.out)
    print(f"wrote {out} ({len(package_files())} files), code version "
          f"{provenance.version_label(__version__, build_info)}")


if __name__ == "__main__":
    main()
