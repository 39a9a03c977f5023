"""`itersg data synth|verify|prepare`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from itersg.cli._params import add_force_argument
from itersg.cli._types import non_negative_int, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="synthetic dataset, verification and preparation of VG150 files")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    synth = verbs.add_parser("synth", help="write a synthetic dataset in the VG150 file format")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--images", type=positive_int, default=1500, help="number of images (default 1500)")
    synth.add_argument("--seed", type=non_negative_int, default=0,
                       help="generator seed; same seed, same files (default 0)")
    synth.add_argument("--image-size", type=positive_int, default=128, help="longer image side in pixels (default 128)")
    add_force_argument(synth)
    synth.set_defaults(handler=_run_synth)

    verify = verbs.add_parser("verify", help="check every VG150 file; one line per problem, exit 1 if any")
    verify.add_argument("--root", type=Path, required=True, help="the VG150 folder")
    verify.add_argument("--decode", action="store_true", help="fully decode every image (slow)")
    verify.set_defaults(handler=_run_verify)

    prepare = verbs.add_parser("prepare", help="write the split sizes, names, predicate frequencies, checksums")
    prepare.add_argument("--root", type=Path, required=True, help="the VG150 folder")
    prepare.add_argument("--out", type=Path, required=True, help="summary JSON to write")
    prepare.add_argument("--num-val", type=non_negative_int, default=5000, help="validation images taken from split 0")
    add_force_argument(prepare)
    prepare.set_defaults(handler=_run_prepare)


def _run_synth(args: argparse.Namespace) -> int:
    from itersg.data.synth import DATASET_NAMES, generate, is_synthetic_dataset
    from itersg.errors import UserError
    from itersg.files import check_output_folder

    if args.images < 10 or args.image_size < 32:
        raise UserError("itersg data synth: use --images >= 10 and --image-size >= 32")
    check_output_folder(args.out, owned=is_synthetic_dataset, writes=DATASET_NAMES, force=args.force,
                        what="a synthetic dataset written by `itersg data synth`")
    print(f"wrote {generate(args.out, args.images, args.seed, args.image_size)}")
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from itersg.data.verify import verify

    problems, summary = verify(args.root, decode=args.decode)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"itersg data verify: {args.root} has problems ({len(problems)} line(s) above); fix them and run "
              "it again", file=sys.stderr)
        return 1
    print(summary)
    return 0


def _run_prepare(args: argparse.Namespace) -> int:
    from itersg.cli._params import dataset_inputs
    from itersg.data.prepare import SUMMARY_FORMAT, write_summary
    from itersg.files import check_output_file

    check_output_file(args.out, marks={SUMMARY_FORMAT}, what="a data summary written by `itersg data prepare`",
                      inputs={"--root": dataset_inputs(args.root)}, force=args.force)
    summary = write_summary(args.root, args.out, args.num_val)
    print(f"wrote {args.out}: splits {summary['split_sizes']}")
    return 0
