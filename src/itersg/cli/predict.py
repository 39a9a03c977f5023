"""``itersg predict``: scene graphs of image files (JSON + PNG per image)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from itersg.cli._params import add_force_argument, add_params_arguments
    from itersg.cli._types import positive_int

    parser = subparsers.add_parser(
        "predict",
        help="scene graphs of image files: a JSON and a PNG (boxes + triplets) per image",
        description="Run a checkpoint on ordinary image files (JPEG, PNG, 16-bit PNG, ...; at most about 179 "
                    "megapixels, the limit PIL sets against image bombs; EXIF orientation honoured) and write, "
                    "per image, OUT/<stem>.json (every object with its box in original pixels, class and score; "
                    "the top triplets with subject/object indices, predicate and score) and OUT/<stem>.png "
                    "(the boxes of those triplets and the list subject —predicate→ object); the JSON follows "
                    "itersg/schemas/scene_graph.schema.yaml. Class and predicate names come from data.root's "
                    "VG-SGG-dicts-with-attri.json; "
                    "the model settings (model.overrides, data.test_size) from --params/--set, as for "
                    "`itersg evaluate`. Runs on the GPU when there is one. An unreadable image is one error "
                    "line; the others are still processed and the exit status is 2.",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument("--checkpoint", required=True, type=Path, metavar="FILE", help="trained weights")
    parser.add_argument("--variant", required=True, help="variant the checkpoint belongs to, e.g. r101-detr")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the JSON and PNG files")
    parser.add_argument("--top", type=positive_int, default=10, metavar="K",
                        help="triplets kept per image, best first (default 10)")
    parser.add_argument("--threshold", type=float, default=0.0, metavar="T",
                        help="drop triplets whose score (subject x object x predicate probability) is below "
                             "T (default 0)")
    add_params_arguments(parser)
    add_force_argument(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from itersg.cli._params import params_from
    from itersg.errors import UserError
    from itersg.files import check_output_folder, refuse_inputs
    from itersg.predict import is_prediction_folder, load_predictor, output_paths, predict_files

    failures: list[UserError] = []

    def report(error: UserError) -> None:
        failures.append(error)
        print(f"itersg: error: {error}", file=sys.stderr)

    # clashing names, an unwritable --out or one that would destroy data: one line before the model loads
    outputs = [path for pair in output_paths(args.images, args.out) for path in pair]
    inputs = {"IMAGE": args.images, "--checkpoint": args.checkpoint, "--params": args.params}
    check_output_folder(args.out, owned=is_prediction_folder, what="a folder of `itersg predict` results",
                        inputs=inputs, force=args.force)
    refuse_inputs(outputs, inputs)
    predictor = load_predictor(params_from(args), args.variant, args.checkpoint)
    written = predict_files(predictor, args.images, args.out, variant=args.variant, checkpoint=args.checkpoint,
                            top=args.top, threshold=args.threshold, on_error=report)
    print(f"itersg predict: {len(written)} of {len(args.images)} images -> {args.out} "
          f"({predictor.device.type})")
    return 2 if failures else 0
