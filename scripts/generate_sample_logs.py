"""Write a deterministic sample behaviour log (and its planted item clusters).

Example: python scripts/generate_sample_logs.py --out data/sample --n-events 150000
The defaults match conf/local.yaml; --n-events 16000000 makes a benchmark-sized log.
"""
import argparse
import dataclasses
import json

from embedlib.sample_data import SampleSpec, write_sample


def main(argv=None):
    defaults = SampleSpec()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (events/ and items.csv)")
    for f in dataclasses.fields(SampleSpec):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name), help=f"default {getattr(defaults, f.name)}")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    print(json.dumps(write_sample(SampleSpec(**args), out)))


if __name__ == "__main__":
    main()
