"""Rebuild the run report of --dt from the tables: <report.out_dir>/<dt>/index.html + report.json.

The page shows same-id cosine histograms to the parent version (raw vs stabilized), the
quality trend over past versions, sequence statistics, training throughput and the rows
carried, evicted and in the delta; report.json holds every figure. --out-dir overrides
report.out_dir. Prints the path of index.html. The same as `embedlib report ...`.
"""
import sys

from embedlib import report
from embedlib.cli import run_job


def main(argv=None):
    return report.main(argv, __doc__)


if __name__ == "__main__":
    sys.exit(run_job(main))
