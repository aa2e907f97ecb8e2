"""HR@k of dt's PARENT version on the transitions of day dt (data it was never trained on).

Queries are consecutive items of dt's sequences that start on day dt; a popularity baseline
(the parent's most trained items) and a co-occurrence baseline (each query's most
co-occurring items in the parent's sequences, evaluate.cooccurrence_window; 0 turns it off)
answer the same queries. The summary (hr, ndcg, popularity_hr, cooccurrence_hr, test_pairs)
goes to the run_stats table and the dt's report ("Next-day hit rate"); a root version (no
parent) records an empty summary. Needs build_sequences and stabilize of dt.
"""
import sys

from embedlib.cli import run_job, step_main


def main(argv=None):
    return step_main(__doc__, "forward_hit_rate", argv)


if __name__ == "__main__":
    sys.exit(run_job(main))
