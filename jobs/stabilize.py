"""Stabilize the vectors of one dt against the previous published version, and publish them.

Modes (stabilize.mode): canonicalize_align - the low-rank SVD of the score matrix T W^T
(from Gram matrices and their Cholesky factors) then an orthogonal Procrustes rotation onto
the parent version: preserves every item-context (item-user) score; align - the rotation
only: preserves every cosine and norm; none - publish as trained. auto picks
canonicalize_align when a second matrix exists (Item2Vec context vectors, two-tower user
vectors), else align. Inputs are the pipeline's raw tables of --dt, or any Parquet folder or
Hive table of (id, vector) set with --set stabilize.items.path=... (and stabilize.other.*).
The parent is the latest registered version before --dt, at most publish.max_age_days old
(else dt is a new root). Writes embeddings_<side> for dt (with the parent's items absent
today carried for publish.ttl_days), the item delta (tables.deltas: new, evicted, moved by
more than publish.delta_cosine_threshold), then registers the version; quality gates
(stabilize.max_score_error, stabilize.min_stabilized_cosine) stop the job before anything
is written.
"""
import sys

from embedlib.cli import run_job, step_main


def main(argv=None):
    return step_main(__doc__, "stabilize", argv)


if __name__ == "__main__":
    sys.exit(run_job(main))
