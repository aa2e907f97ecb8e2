"""Train Item2Vec item vectors on the sequences of one logical date.

Reads the dt partition of tables.sequences (written by build_sequences) and trains the
trainer named by train.trainer:
  gensim (default)  the executors write the sequences as text part files in parallel (to
                    train.corpus_dir: a temporary folder locally; on a cluster a folder
                    every host mounts, or a Hadoop URI copied to the driver), joined into
                    the one corpus file gensim trains on (skip-gram with negative sampling,
                    corpus_file mode, train.workers threads); writes item vectors and
                    context vectors (syn1neg).
  spark             pyspark.ml Word2Vec (hierarchical softmax, distributed); writes item
                    vectors only (no context vectors, so stabilization is align-only).
Writes the dt partition of <tables.raw_embeddings_prefix>_item (and _context) with columns
id, vector array<float>, count, and one metadata row in tables.train_runs. No sequences
for the dt, one distinct item or a vocabulary below train.min_vocab_size is an error and
nothing is written. Example: --set train.window=20 --set train.epochs=20.
"""
import sys

from embedlib.cli import run_job, step_main


def main(argv=None):
    return step_main(__doc__, "train_item2vec", argv)


if __name__ == "__main__":
    sys.exit(run_job(main))
