"""What every job shares on the command line: --conf, --dt, --set, and error reporting."""
from __future__ import annotations

import argparse
import datetime as _dt
from typing import Callable, Sequence

from embedlib.config import Config, load_config
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger

log = get_logger(__name__)

COMMON_EPILOG = """\
Every job takes the same flags: --conf conf/<env>.yaml (see conf/local.yaml for every key),
--dt YYYY-MM-DD (the logical date) and any number of --set section.key=value overrides,
e.g. --set spark.master=local[2] --set sequences.min_count=5.
"""


def parse_dt(value: str) -> str:
    """argparse type for --dt: a real calendar date in YYYY-MM-DD form."""
    try:
        return _dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dt must be a date like 2024-01-31, got {value!r}") from None


def job_parser(description: str, dt_required: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, epilog=COMMON_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", required=True, help="YAML config file, e.g. conf/local.yaml")
    parser.add_argument("--dt", type=parse_dt, required=dt_required,
                        help="logical date YYYY-MM-DD of the run")
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
