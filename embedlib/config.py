"""The one config loader: YAML file + ``--set a.b=value`` overrides -> typed dataclasses.

Every key is declared below with its type and default (``typed_yaml`` checks and coerces).
An unknown or mistyped key is an error that names the key and where it came from.
Relative paths in a config resolve against the working directory of the job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embedlib import typed_yaml
from embedlib.typed_yaml import ConfigError as ConfigError  # re-exported: callers catch it from here
from embedlib.typed_yaml import check_at_least as check_at_least
from embedlib.typed_yaml import check_choice as check_choice

# Similarity metrics of the lookup index, the service and the neighbours job.
METRICS = ("cosine", "dot")


@dataclass
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "embedlib"
    warehouse_dir: str = "warehouse"
    # Embedded Derby metastore folder; null: <warehouse_dir>/metastore_db. Ignored when
    # hive_metastore_uris is set.
    metastore_dir: str | None = None
    hive_metastore_uris: str | None = None
    shuffle_partitions: int = 8
    ui_enabled: bool = False
    driver_memory: str = "4g"
    log_level: str = "ERROR"
    # Any further spark.* settings, passed through as they are.
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.metastore_dir is None:
            self.metastore_dir = f"{self.warehouse_dir.rstrip('/')}/metastore_db"


@dataclass
class TablesConfig:
    database: str = "embedlib"
    sequences: str = "sequences"
    item_stats: str = "item_stats"
    # Embedding tables are "<prefix>_<side>", side in item / context / user.
    raw_embeddings_prefix: str = "embeddings_raw"
    embeddings_prefix: str = "embeddings"
    versions: str = "versions"
    # One row per dt: the trainer's metadata (parameters, vocabulary, speed, versions).
    train_runs: str = "train_runs"
    # One row per dt and step: the step's summary (counts, metrics) as JSON.
    run_stats: str = "run_stats"
    deltas: str = "embedding_deltas"
    neighbors: str = "neighbors"
    # Run folders of a dt that neither the metastore nor the registry points at (left by an
    # interrupted rerun) are deleted by the next write once the dt is registered, or once
    # they are older than this many hours.
    keep_orphan_runs_hours: float = 24.0
    # Who writes the Parquet files of the published vector tables (embeddings, deltas):
    # "arrow", pyarrow in the executors (about half the time; falls back to Spark's writer,
    # with an INFO line, where pyarrow cannot open the filesystem), or "spark", Spark's writer.
    vector_io: str = "arrow"
    # Run leases (embedlib/lease.py): a run refreshes the lease of its (database, dt) this
    # often; another run breaks a lease not refreshed for lease_stale_minutes (a crashed
    # run's on another host; on this host a dead holder's at once).
    lease_refresh_seconds: float = 30.0
    lease_stale_minutes: float = 10.0

    def __post_init__(self):
        if self.keep_orphan_runs_hours < 0:
            raise ConfigError("tables.keep_orphan_runs_hours must be >= 0")
        if not 0 < self.lease_refresh_seconds < self.lease_stale_minutes * 60:
            raise ConfigError("tables.lease_refresh_seconds must be > 0 and shorter than "
                              "tables.lease_stale_minutes")
        check_choice("tables.vector_io", self.vector_io, ("arrow", "spark"))


@dataclass
class ColumnsConfig:
    user: str = "user_id"
    item: str = "item_id"
    time: str = "ts"
    event_type: str | None = None
    weight: str | None = None


@dataclass
class InputConfig:
    format: str = "csv"
    path: str | None = None
    table: str | None = None
    csv_header: bool = True
    csv_delimiter: str = ","
    # RFC 4180 by default: a field holding the delimiter, a quote or a newline is quoted, and
    # a quote inside it is doubled (escape = quote). Fields are read exactly as written.
    csv_quote: str = '"'
    csv_escape: str = '"'
    # Records that span lines (a quoted field holding a newline) need Spark's multiLine
    # reader, which cannot split a file: one task per file. "auto": on only when some line
    # holds an odd number of unescaped quote characters, which a quoted newline leaves (one
    # splittable text pass that stops at the first such line); "true" / "false" force it.
    csv_multiline: str = "auto"
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    time_unit: str = "s"
    # Keep only these event types (needs columns.event_type); empty keeps all.
    event_types: list = field(default_factory=list)
    # Drop events whose weight is below this (needs columns.weight); null keeps all.
    min_weight: float | None = None

    def __post_init__(self):
        check_choice("input.format", self.format, ("csv", "parquet", "table"))
        check_choice("input.time_unit", self.time_unit, ("s", "ms", "timestamp"))
        check_choice("input.csv_multiline", self.csv_multiline, ("auto", "true", "false"))
        for name in ("csv_quote", "csv_escape"):
            value = getattr(self, name)
            if len(value) != 1 or value == self.csv_delimiter:
                raise ConfigError(f"input.{name} must be one character other than input.csv_delimiter "
                                  f"({self.csv_delimiter!r}), got {value!r}")


@dataclass
class SequencesConfig:
    lookback_days: int = 30
    # A gap strictly greater than this starts a new session.
    session_gap_seconds: int = 1800
    max_session_length: int = 50
    min_sequence_length: int = 2
    # Item admission: items with fewer events than this in the window are removed.
    min_count: int = 2
    # Events later than now + this are bad rows ("future_time").
    future_tolerance_seconds: int = 86400
    # Fixed "now" (ISO timestamp) for reproducible runs; null means the wall clock.
    now: str | None = None

    def __post_init__(self):
        check_at_least("sequences", self, ("lookback_days", "max_session_length", "min_sequence_length",
                                           "min_count"), 1)
        if self.session_gap_seconds < 0:
            raise ConfigError("sequences.session_gap_seconds must be >= 0")


@dataclass
class TrainConfig:
    """Item2Vec training (step 2). Defaults are word2vec's skip-gram defaults."""

    # gensim (driver, multi-threaded, corpus_file mode), spark (pyspark.ml Word2Vec) or
    # ppmi_svd (co-occurrence counts -> shifted PPMI -> randomized SVD on Spark; the keys below).
    trainer: str = "gensim"
    vector_size: int = 64
    window: int = 5
    # Negative samples per positive (gensim); the spark trainer uses hierarchical softmax.
    negative: int = 5
    # Exponent of the negative-sampling distribution (gensim only); may be negative.
    ns_exponent: float = 0.75
    # Down-sampling threshold of frequent items (gensim only); 0 disables it.
    sample: float = 1e-3
    epochs: int = 5
    # Items seen fewer times than this in the dt's sequences get no vector.
    min_count: int = 1
    # 1: skip-gram, 0: CBOW (gensim only; the spark trainer is skip-gram).
    sg: int = 1
    alpha: float = 0.025
    min_alpha: float = 0.0001
    workers: int = 2
    seed: int = 1
    # A vocabulary (after min_count) smaller than this is an error, nothing is written.
    min_vocab_size: int = 2
    # Where the executors write the corpus part files: a local folder (on a cluster, one
    # that every host mounts), or a Hadoop URI (hdfs://, s3a://) whose parts the driver
    # copies to a temporary folder; null: a temporary folder (local masters only).
    corpus_dir: str | None = None
    # spark trainer: numPartitions (more is faster and less accurate) and maxSentenceLength.
    spark_partitions: int = 1
    spark_max_sentence_length: int = 1000
    # Seed ensemble (gensim): train k models with seeds seed, seed+1, ..., put them in one
    # frame and average them; 1 is a single model. Less neighbour churn between versions.
    ensemble_size: int = 1
    # Where the members train: local (a process pool on the driver's host, within
    # train.workers threads), spark (one Spark task per member; the corpus is shipped with
    # SparkContext.addFile), auto (local for a local master, else spark).
    ensemble_runner: str = "auto"
    # cold: random initialisation every day. warm: start from the parent version's raw item
    # and context vectors (today's vocabulary, new ids random) and train warm_epochs from
    # warm_alpha; no parent (or another dimension) falls back to cold. gensim, one model.
    init: str = "cold"
    warm_epochs: int = 2
    warm_alpha: float = 0.01
    # Under init=warm, a cold start when the chain's last cold start is this many days old;
    # 0 never forces one.
    cold_every_days: int = 0
    # ppmi_svd trainer (deterministic, all Spark passes; docs/pipeline.md). Counts: pairs
    # within train.window positions, weighted "uniform" (1) or "distance" (1 / distance);
    # train.min_count admits items as for gensim.
    cooccurrence_weighting: str = "uniform"
    # Only the first this many items of a longer sequence are paired (one huge sequence
    # would otherwise make one task's pairs grow as its length times the window).
    cooccurrence_max_length: int = 1000
    # Keep the counts as this table (one dt partition; columns row, col, count); null: not kept.
    cooccurrence_table: str | None = None
    # Context-distribution smoothing exponent of the PMI (1.0: none; word2vec uses 0.75; see
    # bench_train's sweep) and the k of its log(k) shift (1.0: none).
    ppmi_smoothing: float = 1.0
    ppmi_shift: float = 1.0
    # Randomized SVD: columns beyond train.vector_size in the range finder, and power
    # iterations (each costs two passes over the SPPMI entries and sharpens the subspace).
    svd_oversample: int = 10
    svd_power_iterations: int = 2
    # Item vectors U S^p, context vectors V S^(1-p), p = eigen_weight in [0, 1].
    eigen_weight: float = 1.0

    def __post_init__(self):
        check_choice("train.trainer", self.trainer, ("gensim", "spark", "ppmi_svd"))
        check_choice("train.cooccurrence_weighting", self.cooccurrence_weighting, ("uniform", "distance"))
        self._check_ppmi_svd()
        check_choice("train.ensemble_runner", self.ensemble_runner, ("auto", "local", "spark"))
        check_choice("train.init", self.init, ("cold", "warm"))
        check_at_least("train", self, ("vector_size", "window", "epochs", "min_count", "workers",
                                       "spark_partitions", "spark_max_sentence_length",
                                       "ensemble_size", "warm_epochs"), 1)
        check_at_least("train", self, ("cold_every_days",), 0)
        if self.trainer == "spark" and (self.ensemble_size > 1 or self.init == "warm"):
            raise ConfigError(
                "train.ensemble_size > 1 and train.init=warm need train.trainer=gensim: Spark "
                "MLlib's Word2Vec takes no initial vectors and has no context side to put "
                f"members in one frame (got ensemble_size={self.ensemble_size}, init={self.init})")
        if self.init == "warm" and self.ensemble_size > 1:
            raise ConfigError(
                "train.init=warm with train.ensemble_size > 1 is refused: members started from "
                "the one parent would share its noise instead of averaging it out; choose one")
        if not 0 < self.warm_alpha <= 1 or self.min_alpha > self.warm_alpha:
            raise ConfigError("train.warm_alpha must be in (0, 1] and at least train.min_alpha, "
                              f"got {self.warm_alpha}")
        if self.negative < 0:
            raise ConfigError(f"train.negative must be >= 0, got {self.negative}")
        if self.sg not in (0, 1):
            raise ConfigError(f"train.sg must be 0 (CBOW) or 1 (skip-gram), got {self.sg}")
        if self.sample < 0:
            raise ConfigError(f"train.sample must be >= 0, got {self.sample}")
        if not 0 < self.alpha <= 1 or not 0 <= self.min_alpha <= self.alpha:
            raise ConfigError("train.alpha must be in (0, 1] and train.min_alpha in [0, alpha]")
        if self.min_vocab_size < 2:
            raise ConfigError(f"train.min_vocab_size must be >= 2, got {self.min_vocab_size}")

    def _check_ppmi_svd(self):
        if self.trainer == "ppmi_svd" and self.ensemble_size > 1:
            raise ConfigError(
                f"train.ensemble_size={self.ensemble_size} with train.trainer=ppmi_svd is refused: "
                "the trainer is deterministic, every member would be the same model; set "
                "train.ensemble_size=1")
        if self.trainer == "ppmi_svd" and self.init == "warm":
            raise ConfigError(
                "train.init=warm with train.trainer=ppmi_svd is refused: the factorization has no "
                "initial vectors (it is deterministic; stabilize.* keeps versions close); set "
                "train.init=cold")
        check_at_least("train", self, ("svd_oversample", "svd_power_iterations"), 0)
        check_at_least("train", self, ("cooccurrence_max_length",), 2)
        if not self.ppmi_smoothing > 0 or not self.ppmi_shift > 0:
            raise ConfigError("train.ppmi_smoothing and train.ppmi_shift must be > 0, got "
                              f"{self.ppmi_smoothing} and {self.ppmi_shift}")
        if not 0 <= self.eigen_weight <= 1:
            raise ConfigError(f"train.eigen_weight must be within [0, 1], got {self.eigen_weight}")


@dataclass
class EvaluateConfig:
    """Next-item evaluation on a temporal hold-out (jobs/evaluate_item2vec.py)."""

    # Sequences starting at or after the cut are held out; the cut is cut_time (ISO
    # timestamp, UTC) or, when null, the start time below which 1 - test_share of them lie.
    cut_time: str | None = None
    test_share: float = 0.1
    k: int = 10
    # Held-out transitions kept per user, earliest first; 0 keeps all.
    max_pairs_per_user: int = 0
    # Planted-cluster ground truth (item_id, cluster) CSV for the purity metric; null skips it.
    clusters_path: str | None = None
    # The co-occurrence kNN baseline next to popularity: a query's k most co-occurring items
    # within this many positions in the training sequences (no embedding); 0 skips it.
    cooccurrence_window: int = 5

    def __post_init__(self):
        if not 0 < self.test_share < 1:
            raise ConfigError(f"evaluate.test_share must be within (0, 1), got {self.test_share}")
        if self.k < 1 or self.max_pairs_per_user < 0 or self.cooccurrence_window < 0:
            raise ConfigError("evaluate.k must be >= 1, evaluate.max_pairs_per_user and "
                              "evaluate.cooccurrence_window >= 0")


@dataclass
class VectorSourceConfig:
    """A user-supplied (id, vector) table: a Parquet folder or a Hive table."""

    format: str = "parquet"
    path: str | None = None
    table: str | None = None
    id_col: str = "id"
    vector_col: str = "vector"
    # For a partitioned Hive table: read only this dt partition (null reads all rows).
    dt: str | None = None

    def __post_init__(self):
        check_choice("stabilize.*.format", self.format, ("parquet", "table"))


@dataclass
class StabilizeConfig:
    # auto: canonicalize_align when a second matrix (context / user) exists, else align.
    mode: str = "auto"
    # Sources; null means the pipeline's raw tables of the dt (embeddings_raw_item/_context).
    items: VectorSourceConfig | None = None
    other: VectorSourceConfig | None = None
    # Name of the second side in published tables: context (Item2Vec) or user (two-tower).
    other_side: str = "context"
    # Fit the rotation on items only, or on items and the other side (weighted).
    align_on: str = "items"
    other_weight: float = 1.0
    # Alignment needs at least max(dim, min_overlap_share * rows) ids shared with the parent.
    min_overlap_share: float = 0.2
    on_low_overlap: str = "error"
    on_dim_change: str = "error"
    on_rank_deficient: str = "eigh"
    on_invalid_vectors: str = "error"
    # Gram eigenvalues below rcond * largest count as zero (cond(T) about 1/sqrt(rcond)).
    gram_rcond: float = 1e-10
    # Quality gates: nothing is published when they fail.
    max_score_error: float = 1e-4
    min_stabilized_cosine: float | None = None
    # Metrics sampling: score pairs; items queried for the neighbour churn (their neighbours
    # are searched among all ids shared with the parent).
    score_sample: int = 512
    overlap_queries: int = 500
    overlap_k: int = 10
    # Temporal smoothing: a chained version publishes, for an id its parent has,
    # smoothing * aligned + (1 - smoothing) * the parent's published vector (new ids: the
    # aligned one). 1.0 = off; lower keeps more neighbours and moves changed items slower.
    smoothing: float = 1.0

    def __post_init__(self):
        if not 0 < self.smoothing <= 1:
            raise ConfigError(f"stabilize.smoothing must be within (0, 1] (1 = off), got {self.smoothing}")
        check_choice("stabilize.mode", self.mode, ("auto", "canonicalize_align", "align", "none"))
        check_choice("stabilize.other_side", self.other_side, ("context", "user"))
        check_choice("stabilize.align_on", self.align_on, ("items", "items_and_other"))
        for key in ("on_low_overlap", "on_dim_change"):
            check_choice(f"stabilize.{key}", getattr(self, key), ("error", "new_root"))
        check_choice("stabilize.on_rank_deficient", self.on_rank_deficient, ("eigh", "error"))
        check_choice("stabilize.on_invalid_vectors", self.on_invalid_vectors, ("error", "drop"))
        if not 0 <= self.min_overlap_share <= 1:
            raise ConfigError("stabilize.min_overlap_share must be within [0, 1]")


@dataclass
class PublishConfig:
    # The parent is the latest registered version before dt, if at most this old; an older
    # or missing one makes dt a new root (recorded as such).
    max_age_days: int = 7
    # Items of the parent absent today keep their published vector (carried) this long.
    ttl_days: int = 7
    # Delta table: items whose published vector turned by more than this cosine distance.
    delta_cosine_threshold: float = 0.05
    # A parent whose data no longer matches its registry row (lost files, other ids): stop
    # with an error naming it, or make dt a new root with that reason recorded.
    on_damaged_parent: str = "error"

    def __post_init__(self):
        if self.max_age_days < 1 or self.ttl_days < 0:
            raise ConfigError("publish.max_age_days must be >= 1 and publish.ttl_days >= 0")
        check_choice("publish.on_damaged_parent", self.on_damaged_parent, ("error", "new_root"))


@dataclass
class ServeConfig:
    # Array backend: auto picks CuPy when a CUDA device is visible, else NumPy.
    backend: str = "auto"
    # Storage dtype on the device; float16 halves memory, scores are computed in float32.
    dtype: str = "float32"
    metric: str = "cosine"
    # Default and largest k of /similar.
    k: int = 10
    max_k: int = 1000
    # Ids that are not in the index: error, zero (a zero vector) or skip (left out).
    unknown_ids: str = "error"
    # One block of scores (query rows x index rows x 4 bytes) stays under this; 0 picks
    # 8 MiB on the CPU (cache-friendly) and 1 GiB on a GPU (fewer kernel launches).
    max_chunk_bytes: int = 0
    # Query rows scored together (larger batches make better use of the matmul).
    query_batch: int = 1024
    # Embedding table side served and used for neighbours: <embeddings_prefix>_<side>.
    side: str = "item"
    host: str = "127.0.0.1"
    port: int = 8000
    # The neighbours table: K per item, and query partitions (0 keeps the input's).
    neighbors_k: int = 20
    neighbors_partitions: int = 0
    # Serve / build neighbours only for versions committed to the registry (tables.versions).
    require_registered: bool = True
    # Version manifests, written at register time, read by the service without Spark
    # (embedlib/manifest.py); "" is <spark.warehouse_dir>/<tables.database>.db/_manifests.
    manifests: str = ""
    # "latest": poll the manifests every poll_seconds, swap to a newer version; "none": serve
    # the version it started with (POST /admin/reload still works where there are manifests).
    follow: str = "none"
    poll_seconds: float = 60.0
    # POST /admin/reload: loopback clients only while empty; else "Authorization: Bearer <token>".
    admin_token: str = ""
    # Request bounds (413 or 422 beyond them): body bytes, characters per id, ids per batch,
    # neighbours per request (ids x k), and the worst-case size of an answer.
    max_body_bytes: int = 4 * 2**20
    max_id_length: int = 256
    max_batch_ids: int = 10_000
    max_neighbors: int = 100_000
    max_response_bytes: int = 64 * 2**20
    # Micro-batching of GET /similar: concurrent single-id requests that arrive within
    # batch_wait_ms of the first are scored in one matmul (at most batch_max); 0 turns it off.
    batch_wait_ms: float = 2.0
    batch_max: int = 64
    # GET and POST /similar answer 503 (with Retry-After) when not answered within this many
    # seconds (stuck behind a long batch, an overloaded device); never half-answered.
    request_timeout_s: float = 30.0
    # uvicorn worker processes (scripts/serve.py); each loads its own copy of the index.
    workers: int = 1
    # uvicorn's access log, one INFO line per request: off, since at thousands of lookups/s
    # the line costs a large share of each request's time (docs/serving.md).
    access_log: bool = False

    def __post_init__(self):
        check_choice("serve.backend", self.backend, ("auto", "numpy", "cupy"))
        check_choice("serve.follow", self.follow, ("none", "latest"))
        check_choice("serve.dtype", self.dtype, ("float32", "float16"))
        check_choice("serve.metric", self.metric, METRICS)
        check_choice("serve.unknown_ids", self.unknown_ids, ("error", "zero", "skip"))
        check_choice("serve.side", self.side, ("item", "context", "user"))
        check_at_least("serve", self, ("k", "max_k", "neighbors_k", "query_batch", "port", "max_body_bytes",
                                       "max_id_length", "max_batch_ids", "max_neighbors", "max_response_bytes",
                                       "batch_max", "workers"), 1)
        if self.k > self.max_k:
            raise ConfigError(f"serve.k ({self.k}) must be <= serve.max_k ({self.max_k})")
        if self.max_chunk_bytes and self.max_chunk_bytes < 4096:
            raise ConfigError(f"serve.max_chunk_bytes must be 0 (auto) or >= 4096, "
                              f"got {self.max_chunk_bytes}")
        if self.neighbors_partitions < 0:
            raise ConfigError("serve.neighbors_partitions must be >= 0")
        if not self.poll_seconds > 0 or self.batch_wait_ms < 0:
            raise ConfigError("serve.poll_seconds must be > 0 and serve.batch_wait_ms >= 0")
        if not self.request_timeout_s > 0:
            raise ConfigError(f"serve.request_timeout_s must be > 0, got {self.request_timeout_s}")


@dataclass
class ReportConfig:
    """Run reports (embedlib/report.py): <out_dir>/<dt>/index.html and report.json."""

    out_dir: str = "reports"
    # Past registered versions shown in the trend plots (the latest ones up to dt).
    trend_versions: int = 60
    # Points kept of long curves (the item popularity curve, log-spaced ranks).
    max_points: int = 200
    # Bins of the same-id cosine histograms over [-1, 1] (fine: the page merges them for the
    # whole range and zooms in on the stabilized cosines, often all within 0.9-1).
    histogram_bins: int = 400

    def __post_init__(self):
        check_at_least("report", self, ("trend_versions", "max_points", "histogram_bins"), 2)


@dataclass
class Config:
    env: str = "local"
    spark: SparkConfig = field(default_factory=SparkConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    input: InputConfig = field(default_factory=InputConfig)
    sequences: SequencesConfig = field(default_factory=SequencesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    stabilize: StabilizeConfig = field(default_factory=StabilizeConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # Where the config came from (file and overrides), for logs; not a YAML key.
    source: str = field(default="<defaults>", metadata={"yaml": False})


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load ``path`` and apply ``--set key=value`` overrides (values parsed as YAML)."""
    raw = typed_yaml.read_mapping(path)
    typed_yaml.build(Config, raw, "", str(path))  # errors name the file before overrides blur it
    for item in overrides or []:
        typed_yaml.apply_override(Config, raw, item)
    cfg = typed_yaml.build(Config, raw, "", f"{path} with --set overrides" if overrides else str(path))
    cfg.source = str(path) + "".join(f" --set {o}" for o in overrides or [])
    return cfg


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    """Typed config from a plain dict (tests, notebooks)."""
    cfg = typed_yaml.build(Config, raw, "", source)
    cfg.source = source
    return cfg
