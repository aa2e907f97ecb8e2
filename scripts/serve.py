"""Serve a published embedding version over HTTP: /vector, /vectors, /similar, /health,
POST /admin/reload.

What is served:
  --conf                the newest registered version of serve.side (its manifest, no Spark)
  --conf --dt D         version D (its manifest; a version registered before manifests
                        existed is found through the metastore: Spark starts once, then stops)
  --path P              a Parquet file or folder with columns id, vector
With --conf, serve.follow=latest polls the manifests every serve.poll_seconds and swaps to a
newer version; POST /admin/reload (loopback, or serve.admin_token) swaps at once.
serve.workers > 1 runs that many uvicorn worker processes, each with its own index.
The serve.* config keys set the backend (auto picks CuPy on a GPU), dtype, metric, bounds,
host and port; --set overrides them.

  .venv/bin/python scripts/serve.py --conf conf/local.yaml --set serve.follow=latest
  .venv/bin/python scripts/serve.py --conf conf/local.yaml --dt 2024-01-10 --set serve.port=8001
  .venv/bin/python scripts/serve.py --path warehouse/embedlib.db/embeddings_item/dt=2024-01-10/run=<id>
"""
import argparse
import sys
import tempfile

from embedlib.cli import parse_dt, run_job


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", help="Parquet file or folder of a published version")
    parser.add_argument("--conf", help="YAML config (serve.* keys; tables.* and spark.* "
                                       "locate the manifests)")
    parser.add_argument("--dt", type=parse_dt, help="serve this registered version")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key, e.g. serve.port=8001")
    args = parser.parse_args(argv)
    if not args.path and not args.conf:
        parser.error("give --conf (and --dt, or the newest version is served), or --path")
    if args.path and args.dt:
        parser.error("--dt and --path exclude each other")
    return args


def main(argv=None):
    import uvicorn

    from embedlib.serving import startup

    args = parse_args(argv)
    spec = startup.resolve(startup.ServeSpec(conf=args.conf, overrides=args.overrides,
                                             path=args.path, dt=args.dt))
    serve = startup.serve_config(spec).serve
    if serve.workers == 1:
        uvicorn.run(startup.build_app(spec), host=serve.host, port=serve.port, log_level="info",
                    access_log=serve.access_log)
        return
    with tempfile.TemporaryDirectory(prefix="embedlib-serve-") as worker_dir:
        spec.worker_dir = worker_dir
        startup.spec_to_env(spec)
        uvicorn.run("embedlib.serving.startup:app_from_env", factory=True, workers=serve.workers,
                    host=serve.host, port=serve.port, log_level="info", access_log=serve.access_log)


if __name__ == "__main__":
    sys.exit(run_job(main))
