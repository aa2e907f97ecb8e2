"""Build the item-to-item neighbours table for one logical date.

Reads the dt partition of the published item embeddings (tables.embeddings_prefix + "_" +
serve.side), scores every item against all items (serve.metric, exact top serve.neighbors_k,
the item itself left out) inside Spark over Arrow batches, with the index broadcast to the
executors (CuPy on GPU executors, NumPy elsewhere: serve.backend), and writes the dt
partition of tables.neighbors: item_id, neighbors array<struct<id, score>> (replacing it on
a rerun). Version dt must be registered (run stabilize first) unless
serve.require_registered is false; serve.neighbors_partitions spreads the queries over more
tasks.
"""
import sys

from embedlib.cli import run_job, step_main


def main(argv=None):
    return step_main(__doc__, "build_neighbors", argv)


if __name__ == "__main__":
    sys.exit(run_job(main))
