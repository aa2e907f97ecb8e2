"""What the lookup service serves at start-up, in one process or in each uvicorn worker.

``scripts/serve.py`` resolves a ServeSpec once (Spark only for a --dt that has no manifest,
a version registered before manifests existed) and then builds the app itself, or, with
``serve.workers`` > 1, hands the spec to every worker process through an environment
variable: uvicorn calls ``app_from_env`` in each worker, which loads its own index.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from fastapi import FastAPI

from embedlib import manifest
from embedlib.config import Config, ConfigError, load_config
from embedlib.serving.follow import ServedVersion, VersionFollower, load_version
from embedlib.serving.index import EmbeddingIndex, index_options
from embedlib.serving.service import create_app

ENV = "EMBEDLIB_SERVE_SPEC"
SIGNAL_FILE = "reload-signal"


@dataclass
class ServeSpec:
    """conf/overrides: the config; then one of path (a Parquet folder), files (resolved by
    Spark for dt), dt (its manifest) or none of them (the newest manifest).
    worker_dir: a folder the workers of one service share (the reload signal)."""

    conf: str | None = None
    overrides: list = field(default_factory=list)
    path: str | None = None
    dt: str | None = None
    files: list | None = None
    worker_dir: str | None = None


def serve_config(spec: ServeSpec) -> Config:
    if spec.conf:
        return load_config(spec.conf, spec.overrides)
    if spec.overrides:
        raise ConfigError("--set needs --conf")
    return Config()


def resolve(spec: ServeSpec) -> ServeSpec:
    """Find the files of a --dt that has no manifest (or with serve.require_registered false)
    through the metastore, once, before any worker starts."""
    cfg = serve_config(spec)
    if spec.path or not spec.dt:
        return spec
    root, side = manifest.manifest_root(cfg), cfg.serve.side
    if cfg.serve.require_registered and spec.dt in manifest.list_dts(root, side):
        return spec
    from embedlib.serving.published import partition_files
    from embedlib.spark import get_spark

    spark = get_spark(cfg.spark, f"serve {spec.dt}")
    try:
        return replace(spec, files=partition_files(spark, cfg, spec.dt))
    finally:
        spark.stop()


def initial_version(spec: ServeSpec, cfg: Config) -> ServedVersion:
    root, options = manifest.manifest_root(cfg), index_options(cfg.serve)
    if spec.path or spec.files:
        source = spec.path or spec.files
        return ServedVersion.of(EmbeddingIndex.from_parquet(source, **options),
                                spec.dt or str(spec.path), str(spec.path or spec.files[0]))
    if spec.dt:
        return load_version(manifest.read_manifest(root, cfg.serve.side, spec.dt), cfg.serve)
    return load_version(manifest.latest_manifest(root, cfg.serve.side), cfg.serve)


def build_app(spec: ServeSpec) -> FastAPI:
    cfg = serve_config(spec)
    signal = Path(spec.worker_dir) / SIGNAL_FILE if spec.worker_dir else None
    follower = VersionFollower(initial_version(spec, cfg), cfg.serve,
                               root=manifest.manifest_root(cfg) if spec.conf else None,
                               signal_path=signal)
    return create_app(follower, cfg.serve)


def spec_to_env(spec: ServeSpec) -> None:
    os.environ[ENV] = json.dumps(asdict(spec))


def app_from_env() -> FastAPI:
    """uvicorn's app factory in each worker process (``serve.workers`` > 1)."""
    return build_app(ServeSpec(**json.loads(os.environ[ENV])))
