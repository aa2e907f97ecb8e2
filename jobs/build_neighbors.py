"""Build the item-to-item neighbours table for one logical date.

Reads the dt partition of the published item embeddings (tables.embeddings_prefix + "_" +
serve.side), scores every item against all items (serve.metric, exact top serve.neighbors_k,
the item itself left out) inside Spark over Arrow batches, with the index broadcast to the
executors (CuPy on GPU executors, NumPy elsewhere: serve.backend), and writes the dt
partition of tables.neighbors: item_id, neighbors array<struct<id, score>> (replacing it on
a rerun).
"""
import sys

from embedlib.cli import job_parser, load_job_config, run_job
from embedlib.spark import get_spark
from embedlib.steps import build_neighbors


def main(argv=None):
    args = job_parser(__doc__).parse_args(argv)
    cfg = load_job_config(args)
    spark = get_spark(cfg.spark, f"build_neighbors {args.dt}")
    return build_neighbors.run(spark, cfg, args.dt)


if __name__ == "__main__":
    sys.exit(run_job(main))
