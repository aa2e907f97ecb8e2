"""Run the whole pipeline for one dt (--dt) or a date range in order (--from/--to).

Each dt goes through every step in one Spark session, in the order of
embedlib/steps/order.py (the Airflow DAG runs the same list): build_sequences,
train_item2vec, stabilize, build_neighbors, forward_hit_rate (HR@10 of the parent version on
that day's transitions) and report (report.out_dir). Each step is also a job of its own,
jobs/<step>.py. A backfill with --parallel N (needs a Hive metastore service,
spark.hive_metastore_uris) runs sequences and training of up to N dts at once and
stabilizes them in date order, each against its parent. Ends with a summary table of the
dts it ran and the last report's path.
"""
import sys

from embedlib import pipeline
from embedlib.cli import job_parser, load_job_config, parse_dt, run_job
from embedlib.spark import get_spark


def main(argv=None):
    parser = job_parser(__doc__, dt_required=False)
    parser.add_argument("--from", dest="first", type=parse_dt, help="first dt of a backfill")
    parser.add_argument("--to", dest="last", type=parse_dt, help="last dt of a backfill (inclusive)")
    parser.add_argument("--continue-on-empty", action="store_true",
                        help="skip a dt whose window has no usable events (logged, shown in the "
                             "summary) instead of stopping the backfill there")
    parser.add_argument("--parallel", type=int, default=1, metavar="N",
                        help="backfill: build sequences and train up to N dts at once, stabilize in "
                             "date order (N > 1 needs spark.hive_metastore_uris; default 1)")
    args = parser.parse_args(argv)
    if bool(args.dt) == bool(args.first or args.last) or bool(args.first) != bool(args.last):
        parser.error("give either --dt, or both --from and --to")
    cfg = load_job_config(args)
    dts = [args.dt] if args.dt else pipeline.date_range(args.first, args.last)
    pipeline.check_parallel(cfg, args.parallel)  # before Spark starts
    spark = get_spark(cfg.spark, "run_pipeline")
    results = pipeline.run_range(spark, cfg, dts, args.continue_on_empty, args.parallel)
    print(pipeline.format_table(pipeline.summary_rows(results)))
    reports = [r["report"]["path"] for r in results.values() if "report" in r]
    print(f"report: {reports[-1]}" if reports else "report: none (every dt was skipped)")
    return results


if __name__ == "__main__":
    sys.exit(run_job(main))
