"""List the registered versions (the registry table) and check that their data is readable.

Prints one line per version and side: dt, side, rows, carried, parent, root reason, mode,
same-id cosine to the parent (raw / stabilized), score preservation error, and whether
its data matches the registry (row count and fingerprint of ids and vectors). --json prints the same as
JSON (one object) for scripts and tests. Exit code 2 if any registered version's data is
missing or differs from its registry row (the table is printed first, then one ERROR line).
"""
import json
import sys

from embedlib import integrity, registry
from embedlib.cli import job_parser, load_job_config, run_job
from embedlib.spark import get_spark


def main(argv=None):
    parser = job_parser(__doc__, dt_required=False, dt_help="show only this version (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    cfg = load_job_config(args)
    spark = get_spark(cfg.spark, "show_versions")
    rows = registry.describe_versions(spark, cfg, [args.dt] if args.dt else None)
    if args.json:
        print(json.dumps(rows, sort_keys=True, default=str))
    else:
        from embedlib.pipeline import format_table
        print(format_table([{k: v for k, v in r.items() if k != "problem"} for r in rows]))
    damaged = [r["problem"] for r in rows if r["problem"]]
    if damaged:
        raise integrity.IntegrityError(f"{len(damaged)} of {len(rows)} registered versions do not match "
                                       f"their data: " + " | ".join(damaged))
    return rows


if __name__ == "__main__":
    sys.exit(run_job(main))
