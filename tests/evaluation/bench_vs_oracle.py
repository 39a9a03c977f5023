"""Time the vectorised scene-graph metrics against the loop oracle on synthetic VG-sized data.

Usage (from the project root): .venv/bin/python tests/evaluation/bench_vs_oracle.py [--num-images 5000]
Prints the bench result as JSON. The oracle lives here, in the tests, so this script passes it in.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from oracle import oracle_scores

from itersg.evaluation.bench import bench_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iou-convention", choices=("isg", "sgb"), default="isg")
    args = parser.parse_args()
    result = bench_metrics(args.num_images, args.seed, oracle=oracle_scores,
                           iou_convention=args.iou_convention)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
