"""Rebuild the run report of --dt from the tables (the same as `embedlib report ...`).

See `--help` (embedlib/cli.py REPORT_DESCRIPTION) for what the page shows.
"""
import sys

from embedlib.cli import report_main, run_job

if __name__ == "__main__":
    sys.exit(run_job(report_main))
