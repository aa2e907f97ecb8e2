"""Serve a published embedding version over HTTP: /vector, /vectors, /similar, /health.

Either --path (a Parquet file or folder with columns id, vector) or --conf and --dt (the dt
partition of the published embeddings table of serve.side; Spark is started once to find
its files, then stopped). The serve.* config keys set the backend (auto picks CuPy on a
GPU), dtype, metric, unknown-id policy, k, host and port; --set overrides them.

  .venv/bin/python scripts/serve.py --conf conf/local.yaml --dt 2024-01-10 --set serve.port=8001
  .venv/bin/python scripts/serve.py --path warehouse/embedlib.db/embeddings_item/dt=2024-01-10/run=<id>
"""
import argparse
import sys

from embedlib.cli import parse_dt, run_job
from embedlib.config import Config, ConfigError, load_config


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", help="Parquet file or folder of a published version")
    parser.add_argument("--conf", help="YAML config (serve.* keys; tables.* with --dt)")
    parser.add_argument("--dt", type=parse_dt, help="serve this dt of the embeddings table")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key, e.g. serve.port=8001")
    args = parser.parse_args(argv)
    if not args.path and not (args.conf and args.dt):
        parser.error("give --path, or --conf and --dt")
    return args


def published_files(cfg: Config, dt: str) -> list:
    from embedlib.serving.published import partition_files
    from embedlib.spark import get_spark

    spark = get_spark(cfg.spark, f"serve {dt}")
    try:
        return partition_files(spark, cfg, dt)
    finally:
        spark.stop()


def main(argv=None):
    import uvicorn

    from embedlib.serving import EmbeddingIndex, index_options
    from embedlib.serving.service import create_app

    args = parse_args(argv)
    if args.conf:
        cfg = load_config(args.conf, args.overrides)
    elif args.overrides:
        raise ConfigError("--set needs --conf")
    else:
        cfg = Config()
    source = args.path or published_files(cfg, args.dt)
    index = EmbeddingIndex.from_parquet(source, **index_options(cfg.serve))
    app = create_app(index, cfg.serve, version=args.dt or str(args.path))
    uvicorn.run(app, host=cfg.serve.host, port=cfg.serve.port, log_level="info")


if __name__ == "__main__":
    sys.exit(run_job(main))
