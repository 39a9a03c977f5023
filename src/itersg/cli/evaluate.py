"""Evaluation verbs: ``itersg metrics`` (a predictions file -> metrics JSON).

``itersg evaluate`` (run a checkpoint on a split, write the predictions file, then the metrics) is added
by ``_register_evaluate`` below.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from itersg.cli._types import non_negative_int
from itersg.errors import UserError

ZERO_SHOT_FILE = "zeroshot_triplet.pytorch"
DICTS_FILE = "VG-SGG-dicts-with-attri.json"
SPLITS = ("train", "val", "test")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the evaluation verbs to the ``itersg`` parser."""
    _register_evaluate(subparsers)
    _register_metrics(subparsers)


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    from itersg.cli._params import add_force_argument, add_params_arguments

    parser = subparsers.add_parser(
        "evaluate",
        help="run a checkpoint on a split: predictions file, metrics JSON, seconds per image, parameter counts",
    )
    parser.add_argument("--variant", required=True, help="variant name, e.g. r101-detr")
    parser.add_argument("--checkpoint", required=True, type=Path, metavar="FILE", help="weights to evaluate")
    parser.add_argument("--split", choices=SPLITS, default=None, help="split (default: evaluate.split of params)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder for predictions.h5 and metrics.json")
    parser.add_argument("--iteration", type=non_negative_int, default=None,
                        help="training iteration of the checkpoint (default: read from the checkpoint)")
    add_params_arguments(parser)
    add_force_argument(parser)
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from itersg.cli._params import params_from
    from itersg.evaluation.runner import evaluate

    params = params_from(args)
    _check_evaluate_outputs(args, params["data"]["root"])
    split = args.split or params["evaluate"]["split"]
    document = evaluate(params, args.variant, args.checkpoint, split, args.out, iteration=args.iteration)
    sgdet, timing = document["sgdet"], document["timing"]
    print(f"{args.variant} @ {document['iteration']} on {split} ({document['num_images']} images): "
          f"R@50 = {sgdet['R@50']:.4f}, mR@50 = {sgdet['mR@50']:.4f}, "
          f"{timing['s_per_image']} s/image -> {args.out}")
    return 0


def _check_evaluate_outputs(args: argparse.Namespace, data_root: str) -> None:
    """Refuse, before the model runs, a predictions file or metrics JSON in --out that would destroy data."""
    from itersg.cli._params import dataset_inputs
    from itersg.evaluation.metrics import METRICS_FORMAT
    from itersg.evaluation.predictions import FORMAT_NAME
    from itersg.evaluation.runner import METRICS_FILE, PREDICTIONS_FILE
    from itersg.files import check_output_file, check_writable_folder

    out = check_writable_folder(args.out)
    inputs = {"--checkpoint": args.checkpoint, "--params": args.params, "data.root": dataset_inputs(data_root)}
    for name, mark, what in ((PREDICTIONS_FILE, FORMAT_NAME, "a predictions file written by itersg"),
                             (METRICS_FILE, METRICS_FORMAT, "a metrics JSON written by itersg")):
        check_output_file(out / name, marks={mark}, what=what, inputs=inputs, force=args.force)


def _register_metrics(subparsers: argparse._SubParsersAction) -> None:
    from itersg.cli._params import add_force_argument

    parser = subparsers.add_parser(
        "metrics",
        help="scene-graph recalls (R, ng-R, zR, mR, hR @20/50/100) and box AP of a predictions file",
        description="Compute the sgdet metrics and COCO box AP of a predictions file (written by "
                    "`itersg evaluate`) against a split's ground truth, and write the metrics JSON.",
    )
    parser.add_argument("--data", required=True, type=Path, metavar="DIR",
                        help=f"dataset folder (VG150 layout: h5, image_data.json, {DICTS_FILE})")
    parser.add_argument("--split", choices=SPLITS, default="test", help="split the predictions are for")
    parser.add_argument("--predictions", required=True, type=Path, metavar="FILE",
                        help="predictions file (HDF5, see docs/predictions-format.md)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="metrics JSON to write")
    parser.add_argument("--num-val", type=non_negative_int, default=5000, metavar="N",
                        help="validation images taken from the start of the train split (default 5000)")
    parser.add_argument("--iou-convention", choices=("isg", "sgb"), default="isg",
                        help="box IoU: isg = continuous (reference, default); sgb = +1 pixel")
    parser.add_argument("--zero-shot", type=Path, metavar="FILE",
                        help=f"zero-shot triplets (default DIR/{ZERO_SHOT_FILE})")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score only the predicted images when some images of the split have none "
                             "(default: an error); the metrics JSON records the counts")
    add_force_argument(parser)
    parser.set_defaults(handler=_run_metrics)


def load_ground_truth(data_root: Path, split: str, num_val_images: int = 5000) -> dict:
    """{image_id: {"boxes", "labels", "relations", "width", "height"}} of a split, from the data layer."""
    from itersg.data.vg150 import load_split_ground_truth

    return load_split_ground_truth(data_root, split, num_val_images=num_val_images)


def load_predicate_names(data_root: Path) -> list[str]:
    """Predicate names by 0-based index, from the dataset's dicts JSON (``idx_to_predicate``, 1-based)."""
    path = Path(data_root) / DICTS_FILE
    try:
        names = json.loads(path.read_text())["idx_to_predicate"]
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; fetch or build the dataset in {data_root} first") from None
    except (ValueError, KeyError) as err:
        raise UserError(f"{path}: cannot read 'idx_to_predicate' ({err}); fetch the file again") from None
    return [names[key] for key in sorted(names, key=int)]


def _run_metrics(args: argparse.Namespace) -> int:
    from itersg.cli._params import dataset_inputs
    from itersg.data.vg150 import read_zero_shot
    from itersg.evaluation.metrics import (
        METRICS_FORMAT,
        compute_metrics,
        metrics_document,
        write_metrics_json,
    )
    from itersg.evaluation.predictions import PredictionsReader
    from itersg.files import check_output_file

    check_output_file(args.out, marks={METRICS_FORMAT}, what="a metrics JSON written by itersg", force=args.force,
                      inputs={"--predictions": args.predictions, "--data": dataset_inputs(args.data),
                              "--zero-shot": args.zero_shot})
    if not args.data.is_dir():
        raise UserError(f"{args.data}: no such dataset folder (--data); give the folder of the VG150 files, "
                        "e.g. resources/vg")
    with PredictionsReader(args.predictions) as reader:
        if reader.split != args.split:
            raise UserError(f"{args.predictions} holds predictions for split '{reader.split}' but --split is "
                            f"'{args.split}'; pass --split {reader.split}")
        zero_shot = read_zero_shot(args.zero_shot or args.data / ZERO_SHOT_FILE)
        predicate_names = load_predicate_names(args.data)
        ground_truth = load_ground_truth(args.data, args.split, args.num_val)
        metrics = compute_metrics(reader, ground_truth, zero_shot, predicate_names,
                                  iou_convention=args.iou_convention, allow_missing=args.allow_missing)
        document = metrics_document(variant=reader.variant, iteration=reader.iteration, split=args.split,
                                    metrics=metrics)
    write_metrics_json(args.out, document)
    sgdet = metrics["sgdet"]
    print(f"{document['variant']} @ {document['iteration']} on {args.split} "
          f"({metrics['num_images']} images): "
          f"R@20/50/100 = {sgdet['R@20']:.4f}/{sgdet['R@50']:.4f}/{sgdet['R@100']:.4f}, "
          f"mR@100 = {sgdet['mR@100']:.4f}, AP50 = {metrics['bbox']['AP50']:.2f} -> {args.out}")
    return 0
