"""Next-item evaluation of the configured Item2Vec trainer on a temporal hold-out.

Reads the sequences of --dt (tables.sequences), holds out the sequences that start at or
after the cut (evaluate.cut_time, or the latest evaluate.test_share of them), trains
train.trainer with the train.* parameters on the rest, and for every held-out transition
(previous item -> next item) asks for the evaluate.k nearest neighbours of the previous
item by cosine (at most evaluate.max_pairs_per_user pairs per user; 0: all). Prints one
JSON object: HR@k and NDCG@k with the number of test pairs, next to a popularity baseline
on the same pairs, and, with evaluate.clusters_path (the sample log's items.csv), how often
an item's neighbours share its planted cluster.
Writes nothing to the tables. Examples:
  jobs/evaluate_item2vec.py --conf conf/movielens.yaml --dt 2018-09-24
  jobs/evaluate_item2vec.py --conf conf/movielens.yaml --dt 2018-09-24 --set train.trainer=spark
  jobs/evaluate_item2vec.py --conf conf/local.yaml --dt 2024-01-10 \\
      --set evaluate.clusters_path=data/sample/items.csv
"""
import json
import sys
from pathlib import Path

from embedlib.cli import job_parser, load_job_config, run_job
from embedlib.evaluate import evaluate_trainer
from embedlib.spark import get_spark
from embedlib.steps import train_item2vec


def main(argv=None):
    parser = job_parser(__doc__)
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    cfg = load_job_config(args)
    spark = get_spark(cfg.spark, f"evaluate_item2vec {args.dt}")
    report = {"dt": args.dt, "config": cfg.source,
              **evaluate_trainer(spark, train_item2vec.extract(spark, cfg, args.dt), cfg,
                                 name=f"eval-{args.dt}")}
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    sys.exit(run_job(main))
