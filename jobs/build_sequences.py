"""Build item sequences and item statistics for one logical date.

Reads the behaviour log named by input.* in the config (CSV, Parquet or a Hive table),
keeps the events of the sequences.lookback_days days ending with --dt, drops bad rows
(counted by reason in the log), removes items with fewer than sequences.min_count events,
splits each user's events into sessions at gaps longer than sequences.session_gap_seconds,
collapses consecutive repeats, cuts sessions longer than sequences.max_session_length into
chunks and drops sequences shorter than sequences.min_sequence_length. Writes the dt
partition of tables.sequences and tables.item_stats (replacing it on a rerun).
"""
import sys

from embedlib.cli import run_job, step_main


def main(argv=None):
    return step_main(__doc__, "build_sequences", argv)


if __name__ == "__main__":
    sys.exit(run_job(main))
