"""What every job shares on the command line: --conf, --dt, --set, and error reporting."""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from embedlib.config import Config, load_config
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger

log = get_logger(__name__)

COMMON_EPILOG = """\
Common flags: --conf conf/<env>.yaml (every key and its default: embedlib/config.py),
--dt YYYY-MM-DD (the logical date) and any number of --set section.key=value overrides,
e.g. --set spark.master=local[2] --set sequences.min_count=5.
Exit codes: 0 done, 2 an expected failure (bad config or input; one ERROR line says why).
"""


def parse_dt(value: str) -> str:
    """argparse type for --dt: a real calendar date in YYYY-MM-DD form."""
    try:
        return _dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dt must be a date like 2024-01-31, got {value!r}") from None


def job_parser(description: str, dt_required: bool = True,
               dt_help: str = "logical date YYYY-MM-DD of the run") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, epilog=COMMON_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", required=True, help="YAML config file, e.g. conf/local.yaml")
    parser.add_argument("--dt", type=parse_dt, required=dt_required, help=dt_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set sequences.min_count=5 (repeatable)")
    return parser


def load_job_config(args: argparse.Namespace) -> Config:
    return load_config(args.conf, args.overrides)


def run_job(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run a job's main(); expected failures print one clear line and exit 2, not a traceback."""
    try:
        main(argv)
    except EmbedlibError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 2
    return 0


def step_main(description: str, step_name: str, argv: Sequence[str] | None = None) -> dict:
    """The whole of a one-step job: flags, config, SparkSession, run and record the step."""
    from embedlib import pipeline
    from embedlib.spark import get_spark

    args = job_parser(description).parse_args(argv)
    cfg = load_job_config(args)
    spark = get_spark(cfg.spark, f"{step_name} {args.dt}")
    return pipeline.run_step(spark, cfg, args.dt, step_name)


REPORT_DESCRIPTION = """\
Rebuild the run report of --dt from the tables: <report.out_dir>/<dt>/index.html + report.json.

The page shows same-id cosine histograms to the parent version (raw vs stabilized), the
quality trend over past versions, sequence statistics, training throughput and the rows
carried, evicted and in the delta; report.json holds every figure. --out-dir overrides
report.out_dir. Prints the path of index.html.
"""


def report_main(argv: Sequence[str] | None = None) -> Path:
    """``embedlib report`` and jobs/report.py: rebuild the report of --dt; prints its path."""
    from embedlib.report import build_report
    from embedlib.spark import get_spark

    parser = job_parser(REPORT_DESCRIPTION)
    parser.add_argument("--out-dir", help="write <out-dir>/<dt>/ (default: report.out_dir)")
    args = parser.parse_args(argv)
    cfg = load_job_config(args)
    page = build_report(get_spark(cfg.spark, f"report {args.dt}"), cfg, args.dt, args.out_dir)
    print(page.resolve())
    return page


# `embedlib <command> ...` (setup.cfg's console script): command -> its main(argv).
COMMANDS: dict[str, Callable[[Sequence[str] | None], object]] = {"report": report_main}


def main(argv: Sequence[str] | None = None) -> int:
    """The ``embedlib`` console command, e.g. ``embedlib report --conf conf/local.yaml --dt D``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: embedlib {{{','.join(COMMANDS)}}} --conf CONF --dt YYYY-MM-DD [--set KEY=VALUE]",
              file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return run_job(COMMANDS[argv[0]], argv[1:])
