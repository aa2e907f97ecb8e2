"""Build dist/embedlib.zip: the embedlib package with its resources, for spark-submit --py-files.

Example: python scripts/package.py --out dist/embedlib.zip   (what `make package` runs)
Only the package's source and resource files go in (no __pycache__), with fixed timestamps,
so the same source always gives the same bytes. The driver and the executors import
embedlib from it; its dependencies (numpy, pyarrow, gensim, ...) come from the Python that
runs them (spark.pyspark.python), as the README explains.
"""
import argparse
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "embedlib"
# Zip entries need a date; a fixed one keeps the archive reproducible.
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def package_files(root: Path = REPO) -> list[Path]:
    """The files of the package, relative to ``root``, in a stable order."""
    return sorted(p.relative_to(root) for p in (root / PACKAGE).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def build_zip(out: Path, root: Path = REPO) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in package_files(root):
            info = zipfile.ZipInfo(rel.as_posix(), FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, (root / rel).read_bytes())
    tmp.replace(out)  # a half-written zip is never left under the final name
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "dist" / f"{PACKAGE}.zip",
                        help="zip to write (default dist/embedlib.zip)")
    args = parser.parse_args(argv)
    out = build_zip(args.out)
    print(f"wrote {out} ({len(package_files())} files)")


if __name__ == "__main__":
    main()
