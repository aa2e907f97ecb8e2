"""Item2Vec trainers: sequences DataFrame -> item (and context) vectors, same contract for both.

- gensim (default): the executors write the sequences as text part files (one sequence
  per line, in parallel, never through the driver's Python), the parts are joined byte for
  byte into one local file, and gensim trains in ``corpus_file`` mode, whose worker threads
  each read their own byte range of that one file, so it scales with cores. It exports both
  sides: ``wv.vectors`` (items, the input vectors) and ``syn1neg`` (context, the output
  vectors); item . context is the skip-gram score.
- spark: ``pyspark.ml.feature.Word2Vec``, distributed, skip-gram with hierarchical softmax.
  It has no negative sampling, no ``ns_exponent``, no down-sampling and no context vectors,
  so only the item side is written and stabilization can only align it.

Both return vectors as a DataFrame ``id string, vector array<float>, count long`` with the
original id strings (url-encoded in the corpus file only, where whitespace would split them).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import gensim
import numpy as np
import pyarrow as pa
import pyspark
from gensim.models import Word2Vec
from gensim.models.callbacks import CallbackAny2Vec
from pyspark.ml.feature import Word2Vec as SparkWord2Vec
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from embedlib import ensemble, vector_codec
from embedlib.config import TrainConfig
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger

log = get_logger(__name__)

EMBEDDING_COLS = ["id", "vector", "count"]
GENSIM_ONLY = ("negative", "ns_exponent", "sample", "sg", "min_alpha", "workers")
SPARK_ONLY = ("spark_partitions", "spark_max_sentence_length")
PPMI_ONLY = ("cooccurrence_weighting", "cooccurrence_max_length", "cooccurrence_table",
             "ppmi_smoothing", "ppmi_shift", "svd_oversample", "svd_power_iterations", "eigen_weight")


class TrainInputError(EmbedlibError):
    """The sequences cannot give a model: empty, one distinct item, or too small a vocabulary."""


@dataclass
class Corpus:
    """A corpus file: one sequence per line, url-encoded ids separated by single spaces."""

    path: Path
    parts: int
    export_seconds: float


@dataclass
class TrainResult:
    """What a trainer hands to the step: vectors (Spark DataFrames) and the run's metadata."""

    item_df: DataFrame
    context_df: DataFrame | None
    meta: dict = field(default_factory=dict)
    # Further tables the step writes for the dt (name -> frame): ppmi_svd's counts.
    tables: dict = field(default_factory=dict)
    # Frames persisted under the vectors: the caller releases them once they are written.
    cached: list = field(default_factory=list)


def trainer_params(cfg: TrainConfig) -> dict:
    """The parameters that the configured trainer actually uses (for the metadata row)."""
    skip = {"gensim": SPARK_ONLY + PPMI_ONLY, "spark": GENSIM_ONLY + PPMI_ONLY,
            "ppmi_svd": GENSIM_ONLY + SPARK_ONLY + ("epochs", "alpha", "ensemble_runner")}[cfg.trainer]
    return {k: v for k, v in asdict(cfg).items() if k not in skip and k != "corpus_dir"}


def library_versions() -> dict:
    return {"python": platform.python_version(), "gensim": gensim.__version__,
            "numpy": np.__version__, "pyspark": pyspark.__version__, "pyarrow": pa.__version__}


def corpus_lines(sequences_df: DataFrame) -> DataFrame:
    """One ``line`` per non-empty sequence: its url-encoded ids joined by spaces, in a fixed order.

    url_encode leaves no whitespace in a token (gensim splits lines on it) and is undone
    exactly by ``urllib.parse.unquote_plus``; common ids (letters, digits, ``-_.``) pass as
    they are.

    The order depends on the rows and ``spark.sql.shuffle.partitions`` only, not on how the
    input is partitioned: the users are hashed into that many partitions (Spark's hash
    partitioning), each partition sorted by (user, start, session), so a user's sequences
    are together and in time order, and the partitions come one after another in the file.
    A global sort by user gives the same lines in another order, at a higher cost: its range
    partitioning first scans the whole input in a sampling job (and the order made no
    difference to HR@10 beyond seed noise, bench_train's order check). Sorting each input
    partition alone needs no shuffle, but its order would change with the input's files
    and splits. The empty-line filter tests the plain ``concat_ws`` (empty exactly when the
    encoded line is, since url_encode maps only "" to ""): a filter on the encoded line is
    pushed below the shuffle by the optimizer, which then encodes every id twice (three
    times under a global sort, its sampling job included).
    """
    partitions = int(sequences_df.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    return (
        sequences_df.select("user_id", "start_ts", "session_id", "items")
        .where(F.concat_ws(" ", "items") != "")
        .repartition(partitions, "user_id")
        .sortWithinPartitions("user_id", "start_ts", "session_id")
        .select(F.concat_ws(" ", F.transform("items", lambda x: F.url_encode(x))).alias("line"))
    )


def corpus_paths(master: str, corpus_dir: str | None, tmp: Path, name: str
                 ) -> tuple[Path, str | None]:
    """The local corpus file gensim reads, and the Hadoop URI the executors write to (or None).

    A ``corpus_dir`` with a scheme (``hdfs://``, ``s3a://``, ``file://``) is written by the
    executors and copied to ``tmp`` on the driver; a plain path is written in place, so on a
    cluster it must be a mount that every host sees. With no ``corpus_dir`` the corpus goes
    to ``tmp``, which only a local master's executors can reach.
    """
    if corpus_dir and urllib.parse.urlparse(corpus_dir).scheme:
        return tmp / f"{name}.txt", f"{corpus_dir.rstrip('/')}/{name}.parts"
    if not corpus_dir and not master.startswith("local"):
        raise TrainInputError(
            f"train.corpus_dir must be set when spark.master is {master}: the executors write the "
            "corpus there, so give a folder every host mounts or an hdfs:// (or s3a://) URI")
    folder = Path(corpus_dir) if corpus_dir else tmp
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.txt", None


def export_corpus(sequences_df: DataFrame, path: Path, stage_uri: str | None = None) -> Corpus:
    """Write the corpus into ``path`` with Spark's text writer, one part file per partition.

    The executors write the parts in parallel (UTF-8, ``\\n`` line ends, what gensim reads);
    gensim's ``corpus_file`` takes one path (it splits the file into byte ranges by size), so
    the parts are then appended byte for byte in partition order, the order of
    ``corpus_lines``. With ``stage_uri`` the executors write there instead and the parts are
    copied to the driver's disk through Hadoop's FileSystem first.
    """
    started = time.perf_counter()
    parts_dir = path.with_name(f"{path.stem}.parts")
    shutil.rmtree(parts_dir, ignore_errors=True)
    (corpus_lines(sequences_df).write.mode("overwrite").option("compression", "none")
     .text(stage_uri or parts_dir.resolve().as_uri()))
    if stage_uri:
        _fetch_folder(sequences_df.sparkSession, stage_uri, parts_dir)
    parts = join_parts(parts_dir, path)
    shutil.rmtree(parts_dir)
    corpus = Corpus(Path(path), parts, time.perf_counter() - started)
    log.info("corpus %s: %d part files, %d bytes, exported in %.1fs",
             path, parts, path.stat().st_size, corpus.export_seconds)
    return corpus


def join_parts(parts_dir: Path, path: Path) -> int:
    """Append the ``part-NNNNN`` files of ``parts_dir`` to ``path`` byte for byte, in partition
    order; returns how many there were."""
    parts = sorted(parts_dir.glob("part-*"), key=lambda p: int(p.name.split("-")[1]))
    with open(path, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 22)
    return len(parts)


def _fetch_folder(spark: SparkSession, uri: str, local: Path) -> None:
    """Copy the folder ``uri`` (any Hadoop filesystem) to ``local`` and delete it there."""
    jvm = spark.sparkContext._jvm
    source = jvm.org.apache.hadoop.fs.Path(uri)
    fs = source.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    fs.copyToLocalFile(False, source, jvm.org.apache.hadoop.fs.Path(local.resolve().as_uri()), True)
    fs.delete(source, True)


def check_vocabulary(distinct_items: int, vocab_size: int, cfg: TrainConfig) -> None:
    """Raise TrainInputError when the corpus cannot give a usable model."""
    if distinct_items == 0:
        raise TrainInputError("the sequences hold no item: nothing to train on")
    if distinct_items == 1:
        raise TrainInputError("the corpus has one distinct item: item2vec needs at least two")
    if vocab_size < cfg.min_vocab_size:
        raise TrainInputError(
            f"vocabulary too small: {vocab_size} of {distinct_items} items are seen at least "
            f"train.min_count={cfg.min_count} times, train.min_vocab_size is {cfg.min_vocab_size}")


class _EpochLogger(CallbackAny2Vec):
    """Logs each epoch's time and raw words/s (gensim's own progress goes to its logger)."""

    def __init__(self, epochs: int, tokens: int):
        self.epochs, self.tokens, self.epoch, self.started = epochs, tokens, 0, 0.0

    def on_epoch_begin(self, model):
        self.started = time.perf_counter()

    def on_epoch_end(self, model):
        self.epoch += 1
        seconds = time.perf_counter() - self.started
        log.info("gensim epoch %d/%d: %.2fs, %.0f words/s", self.epoch, self.epochs, seconds,
                 self.tokens / max(seconds, 1e-9))


def gensim_model(cfg: TrainConfig) -> Word2Vec:
    """An untrained gensim Word2Vec with the configured parameters."""
    return Word2Vec(vector_size=cfg.vector_size, window=cfg.window, negative=cfg.negative,
                    hs=0, ns_exponent=cfg.ns_exponent, sample=cfg.sample, epochs=cfg.epochs,
                    min_count=cfg.min_count, sg=cfg.sg, alpha=cfg.alpha, min_alpha=cfg.min_alpha,
                    workers=cfg.workers, seed=cfg.seed)


@dataclass
class WarmStart:
    """The parent version's raw vectors, to start today's training from (``train.init=warm``).

    ``ids`` are the original id strings; ``item`` and ``context`` rows follow them.
    ``cold_dt`` is the dt of the last cold start in the parent's chain.
    """

    parent_dt: str
    ids: np.ndarray
    item: np.ndarray
    context: np.ndarray
    cold_dt: str


@dataclass
class Vocabulary:
    """The driver's vocabulary scan, shipped to ensemble members so none scans again."""

    counts: dict  # raw counts of every token, in first-seen order (gensim's raw_vocab)
    sequences: int
    tokens: int


def prepare_model(corpus: Corpus, cfg: TrainConfig) -> tuple[Word2Vec, Vocabulary]:
    """Scan the corpus into a fresh vocabulary (never ``update=True``) and check it.

    The model's weights are gensim's random initialisation; the returned Vocabulary lets
    other processes build the same model without a second scan (``model_from_vocabulary``).
    """
    if cfg.negative < 1:
        raise TrainInputError("train.negative must be >= 1 for the gensim trainer "
                              "(context vectors are the negative-sampling output layer)")
    if corpus.path.stat().st_size == 0:
        raise TrainInputError("the sequences hold no item: nothing to train on")
    model = gensim_model(cfg)
    model.build_vocab(corpus_file=str(corpus.path), keep_raw_vocab=True)
    check_vocabulary(len(model.raw_vocab), len(model.wv), cfg)
    vocab = Vocabulary(dict(model.raw_vocab), model.corpus_count, model.corpus_total_words)
    model.raw_vocab = None
    return model, vocab


def model_from_vocabulary(cfg: TrainConfig, vocab: Vocabulary) -> Word2Vec:
    """The model ``prepare_model`` gives for this vocabulary and ``cfg`` (seed included)."""
    model = gensim_model(cfg)
    model.build_vocab_from_freq(dict(vocab.counts), corpus_count=vocab.sequences)
    model.corpus_total_words = vocab.tokens
    return model


def apply_warm_start(model: Word2Vec, init: WarmStart) -> int:
    """Overwrite the rows of ids that the parent has with its item and context vectors.

    Today's vocabulary stays as scanned: ids the parent has and today's corpus lacks are
    dropped, new ids keep gensim's initialisation. Returns how many rows came from the parent.
    """
    position = {urllib.parse.unquote_plus(k): i for i, k in enumerate(model.wv.index_to_key)}
    pairs = [(position[i], j) for j, i in enumerate(init.ids) if i in position]
    if pairs:
        rows, parent_rows = (np.array(x) for x in zip(*pairs))
        model.wv.vectors[rows] = init.item[parent_rows]
        model.syn1neg[rows] = init.context[parent_rows]
    return len(pairs)


def fit(model: Word2Vec, corpus_path: str, epochs: int, start_alpha: float, end_alpha: float
        ) -> tuple[float, float]:
    """Train a prepared model on the corpus file: (wall seconds, this process's CPU seconds)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    model.train(corpus_file=corpus_path, total_words=model.corpus_total_words, epochs=epochs,
                start_alpha=start_alpha, end_alpha=end_alpha,
                callbacks=[_EpochLogger(epochs, model.corpus_total_words)])
    return time.perf_counter() - started, time.process_time() - cpu_started


def train_gensim_file(corpus: Corpus, cfg: TrainConfig, init: WarmStart | None = None
                      ) -> tuple[Word2Vec, float, float]:
    """Train on a corpus file: the model, the training's wall seconds and its CPU seconds.

    Neither time counts the vocabulary scan. The CPU seconds are this process's (gensim's
    threads), so CPU / wall shows how many cores the training got. The corpus counts come
    from gensim's vocabulary scan: ``model.corpus_count`` sequences and
    ``model.corpus_total_words`` tokens. With ``init`` the known ids start from the parent
    and train ``warm_epochs`` from ``warm_alpha``.
    """
    model, _ = prepare_model(corpus, cfg)
    epochs, alpha = cfg.epochs, cfg.alpha
    if init is not None:
        known = apply_warm_start(model, init)
        epochs, alpha = cfg.warm_epochs, cfg.warm_alpha
        log.info("warm start from %s: %d of %d items start from its vectors; %d epochs from alpha %g",
                 init.parent_dt, known, len(model.wv), epochs, alpha)
    seconds, cpu_seconds = fit(model, str(corpus.path), epochs, alpha, cfg.min_alpha)
    return model, seconds, cpu_seconds


def train_member(corpus_path: str, cfg: TrainConfig, vocab: Vocabulary) -> ensemble.Member:
    """One ensemble member (``cfg.seed`` is its seed), in whatever process runs it."""
    model = model_from_vocabulary(cfg, vocab)
    seconds, cpu_seconds = fit(model, corpus_path, cfg.epochs, cfg.alpha, cfg.min_alpha)
    return ensemble.Member(cfg.seed, list(model.wv.index_to_key), model.wv.expandos["count"],
                           model.wv.vectors, model.syn1neg, seconds, cpu_seconds, platform.node())


@dataclass
class Trained:
    """Vectors fresh from gensim (one model or an ensemble's mean), rows following ``keys``."""

    keys: list[str]  # url-encoded ids (the corpus tokens)
    counts: np.ndarray
    item: np.ndarray
    context: np.ndarray
    sequences: int
    tokens: int
    seconds: float  # wall seconds of the training (all members, their mean included)
    cpu_seconds: float  # CPU seconds of the training: the members' sum plus their alignment and mean
    meta: dict  # the train_runs columns this path fills


def train_single(corpus: Corpus, cfg: TrainConfig, init: WarmStart | None = None) -> Trained:
    """One gensim model (today's path for ensemble_size 1), cold or warm."""
    model, seconds, cpu_seconds = train_gensim_file(corpus, cfg, init)
    wv = model.wv
    return Trained(wv.index_to_key, wv.expandos["count"], wv.vectors, model.syn1neg, model.corpus_count,
                   model.corpus_total_words, seconds, cpu_seconds,
                   {"member_cpu_seconds_json": json.dumps([round(cpu_seconds, 3)])})


def train_ensemble(spark: SparkSession, corpus: Corpus, cfg: TrainConfig) -> Trained:
    """``cfg.ensemble_size`` members (seeds seed, seed+1, ...) trained in parallel, averaged."""
    k = cfg.ensemble_size
    model, vocab = prepare_model(corpus, cfg)
    n, runner = len(model.wv), ensemble_runner(cfg, spark.sparkContext.master)
    del model
    max_result = spark.sparkContext._jsc.sc().getConf().getSizeAsBytes("spark.driver.maxResultSize", "1g")
    ensemble.check_driver_memory(k, n, cfg.vector_size, max_result if runner == "spark" else None,
                                 ensemble.available_bytes())
    seeds = [cfg.seed + j for j in range(k)]
    started = time.perf_counter()
    if runner == "spark":
        shipped = corpus.path.with_name(f"{corpus.path.stem}-{uuid.uuid4().hex[:12]}.txt")
        os.link(corpus.path, shipped)
        log.info("ensemble of %d: one Spark task per member, %d gensim threads each", k, cfg.workers)
        jobs = [(replace(cfg, seed=s, ensemble_size=1), vocab) for s in seeds]
        try:
            members = ensemble.run_on_spark(spark, train_member, jobs, str(shipped))
        finally:  # the executors have their own copies; a corpus_dir must not collect them
            shipped.unlink(missing_ok=True)
    else:
        one = ensemble.member_bytes(n, cfg.vector_size)
        free = ensemble.available_bytes()
        pool = ensemble.local_pool_size(k, cfg.workers, one, free)
        threads = max(1, cfg.workers // pool)
        log.info("ensemble of %d: %d at a time in local processes, %d gensim threads each "
                 "(about %d MiB per member, %s MiB available)", k, pool, threads, one >> 20,
                 "?" if free is None else free >> 20)
        jobs = [(str(corpus.path), replace(cfg, seed=s, workers=threads, ensemble_size=1), vocab)
                for s in seeds]
        members = ensemble.run_local(train_member, jobs, pool)
    for m in members:
        log.info("ensemble member seed %d: %.1fs wall, %.1fs CPU on %s", m.seed, m.seconds, m.cpu_seconds, m.host)
    keys = members[0].keys
    if any(m.keys != keys for m in members):
        raise ensemble.EnsembleError("ensemble members built different vocabularies from one corpus")
    align_cpu = time.process_time()
    averaged = ensemble.align_and_average([m.item for m in members], [m.context for m in members])
    agree = ensemble.agreement([m.item for m in members])
    align_cpu = time.process_time() - align_cpu
    wall = time.perf_counter() - started
    log.info("ensemble of %d averaged in one frame: %.1fs wall, member agreement overlap@%d %s",
             k, wall, ensemble.AGREEMENT_K, "-" if agree is None else f"{agree:.3f}")
    meta = {"ensemble_runner": runner, "seeds_json": json.dumps(seeds),
            "member_seconds_json": json.dumps([round(m.seconds, 3) for m in members]),
            "member_cpu_seconds_json": json.dumps([round(m.cpu_seconds, 3) for m in members]),
            "member_agreement": agree}
    return Trained(keys, members[0].counts, averaged.item, averaged.context, vocab.sequences,
                   vocab.tokens, wall, sum(m.cpu_seconds for m in members) + align_cpu, meta)


def ensemble_runner(cfg: TrainConfig, master: str) -> str:
    """Where the members run: ``local`` processes or ``spark`` tasks (``auto``: by the master)."""
    if cfg.ensemble_runner != "auto":
        return cfg.ensemble_runner
    return "local" if master.startswith("local") else "spark"


def embeddings_frame(spark: SparkSession, ids: np.ndarray, vectors: np.ndarray,
                     counts: np.ndarray) -> DataFrame:
    """DataFrame ``id, vector array<float>, count`` from numpy, through one Arrow table.

    Parameters
    ----------
    ids : ndarray of str, shape (n,)
    vectors : ndarray, shape (n, e), cast to float32
    counts : ndarray of int, shape (n,)
    """
    table = pa.table({"id": pa.array(list(ids), pa.string()),
                      "vector": vector_codec.list_column(vectors, pa.list_(pa.float32())),
                      "count": pa.array(np.asarray(counts, dtype=np.int64))})
    return spark.createDataFrame(table).select(*EMBEDDING_COLS)


def train_gensim(spark: SparkSession, sequences_df: DataFrame, cfg: TrainConfig,
                 corpus_name: str = "corpus", init: WarmStart | None = None) -> TrainResult:
    """Export the corpus, train gensim (one model or an ensemble), return both sides with the
    original ids."""
    with tempfile.TemporaryDirectory(prefix="embedlib-corpus-") as tmp:
        path, stage_uri = corpus_paths(spark.sparkContext.master, cfg.corpus_dir, Path(tmp),
                                       corpus_name)
        corpus = export_corpus(sequences_df, path, stage_uri)
        if cfg.ensemble_size > 1:
            trained = train_ensemble(spark, corpus, cfg)
        else:
            trained = train_single(corpus, cfg, init)
    ids = np.array([urllib.parse.unquote_plus(k) for k in trained.keys], dtype=object)
    meta = run_meta(cfg, len(ids), trained.sequences, trained.tokens, corpus.export_seconds,
                 trained.seconds, has_context=True, init=init)
    meta.update(trained.meta)
    meta["train_cpu_seconds"] = trained.cpu_seconds  # in the step's summary, not in train_runs
    return TrainResult(embeddings_frame(spark, ids, trained.item, trained.counts),
                       embeddings_frame(spark, ids, trained.context, trained.counts), meta)


def train_spark(sequences_df: DataFrame, cfg: TrainConfig) -> TrainResult:
    """Train pyspark.ml Word2Vec (skip-gram, hierarchical softmax); item vectors only."""
    items_df = sequences_df.select("items").where(F.size("items") > 0)
    counts_df = (items_df.select(F.explode("items").alias("id"))
                 .groupBy("id").agg(F.count(F.lit(1)).alias("count"))).cache()
    stats = counts_df.agg(F.count(F.lit(1)).alias("distinct"), F.sum("count").alias("tokens"),
                          F.count(F.when(F.col("count") >= cfg.min_count, 1)).alias("vocab")).first()
    check_vocabulary(stats["distinct"], stats["vocab"], cfg)
    w2v = SparkWord2Vec(vectorSize=cfg.vector_size, windowSize=cfg.window,
                        minCount=cfg.min_count, maxIter=cfg.epochs, stepSize=cfg.alpha,
                        seed=cfg.seed, numPartitions=cfg.spark_partitions,
                        maxSentenceLength=cfg.spark_max_sentence_length,
                        inputCol="items", outputCol="item_vector")
    started = time.perf_counter()
    model = w2v.fit(items_df)
    seconds = time.perf_counter() - started
    item_df = (model.getVectors()
               .join(counts_df, on=F.col("word") == F.col("id"), how="inner")
               .select("id", vector_to_array("vector", "float32").alias("vector"), "count"))
    meta = run_meta(cfg, int(stats["vocab"]), items_df.count(), int(stats["tokens"]), 0.0, seconds,
                 has_context=False)
    return TrainResult(item_df, None, meta)


def run_meta(cfg: TrainConfig, vocab_size: int, sequences: int, tokens: int, export_seconds: float,
          seconds: float, has_context: bool, init: WarmStart | None = None) -> dict:
    """The train_runs row. words/s counts every member's tokens: k members over one corpus
    are k times the words."""
    epochs = cfg.warm_epochs if init else cfg.epochs
    words = tokens * epochs * cfg.ensemble_size
    words_per_second = words / max(seconds, 1e-9)
    if cfg.trainer == "ppmi_svd":  # no epochs, one factorization
        log.info("ppmi_svd trained: %d items, %d tokens in %.1fs", vocab_size, tokens, seconds)
    else:
        log.info("%s trained: %d items, %d tokens x %d epochs x %d model(s) in %.1fs (%.0f words/s)",
                 cfg.trainer, vocab_size, tokens, epochs, cfg.ensemble_size, seconds, words_per_second)
    return {"trainer": cfg.trainer, "params_json": json.dumps(trainer_params(cfg), sort_keys=True),
            "vocab_size": vocab_size, "corpus_tokens": tokens,
            "corpus_sequences": sequences, "export_seconds": export_seconds,
            "train_seconds": seconds, "words_per_second": words_per_second,
            "library_versions_json": json.dumps(library_versions(), sort_keys=True),
            "has_context": has_context, "ensemble_size": cfg.ensemble_size, "ensemble_runner": None,
            "seeds_json": json.dumps([cfg.seed]), "member_seconds_json": json.dumps([round(seconds, 3)]),
            "member_cpu_seconds_json": None, "member_agreement": None,
            "init": "warm" if init else "cold", "init_parent_dt": init.parent_dt if init else None,
            "cold_dt": init.cold_dt if init else None}
