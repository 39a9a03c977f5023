"""`itersg bench VERB`: measurements for docs/benchmarks.md (JSON on stdout)."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from itersg.cli._types import json_object, non_negative_int, positive_int
from itersg.errors import UserError

DEFAULT_ORACLE = Path("tests/evaluation/oracle.py")


def register(subparsers: argparse._SubParsersAction) -> None:
    from itersg.cli._params import add_force_argument, add_params_arguments

    parser = subparsers.add_parser("bench", help="speed and memory benchmarks (results as JSON)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    index = verbs.add_parser("index", help="validate and open a 108,073-image VG150 index: seconds and peak RSS")
    index.add_argument("--root", type=Path, default=Path("results/bench/vg-real-size"),
                       help="folder for the synthetic real-size h5 (made on first use)")
    add_force_argument(index)
    index.set_defaults(handler=_run_index)

    metrics = verbs.add_parser("metrics", help="fast scene-graph metrics vs the loop oracle on synthetic images")
    metrics.add_argument("--images", type=positive_int, default=5000, help="number of synthetic images (default 5000)")
    metrics.add_argument("--oracle", type=Path, default=None,
                         help=f"the loop port of the reference evaluator to compare with (default {DEFAULT_ORACLE} "
                              "when run in a source checkout; without one only the fast metrics are timed)")
    metrics.set_defaults(handler=_run_metrics)

    loader = verbs.add_parser("loader", help="training data path (decode, transform, collate): images/s per worker")
    loader.add_argument("--workers", type=non_negative_int, default=4, help="DataLoader worker processes (default 4)")
    loader.add_argument("--images", type=positive_int, default=400, help="synthetic VG-sized images (default 400)")
    loader.add_argument("--batches", type=positive_int, default=20, help="batches timed after the first (default 20)")
    loader.add_argument("--batch-size", type=positive_int, default=12)
    loader.add_argument("--root", type=Path, default=Path("results/bench/vg-loader"),
                        help="folder for the synthetic images (made on first use)")
    add_params_arguments(loader, help="params whose data.* sizes (full mode) give the training transform")
    add_force_argument(loader)
    loader.set_defaults(handler=_run_loader)

    box_ap = verbs.add_parser("box-ap", help="COCO box AP: faster-coco-eval against pycocotools on synthetic images")
    box_ap.add_argument("--images", type=positive_int, default=5000, help="number of synthetic images (default 5000)")
    box_ap.add_argument("--no-compare", action="store_true", help="time faster-coco-eval only")
    box_ap.set_defaults(handler=_run_box_ap)

    evaluate = verbs.add_parser("evaluate", help="evaluation's CPU work after the model (post-processing, "
                                "predictions file, metrics): ms/image on one thread")
    evaluate.add_argument("--images", type=positive_int, default=1000, help="number of synthetic images (default 1000)")
    evaluate.add_argument("--folder", type=Path, default=None,
                          help="where the temporary predictions file goes (default: the system's temp folder)")
    evaluate.set_defaults(handler=_run_evaluate)

    for name, handler, batch in (("infer", _run_infer, 16), ("train", _run_train, 12)):
        verb = verbs.add_parser(name, help=f"model {name} speed on random images")
        verb.add_argument("--variant", default="r101-detr")
        verb.add_argument("--batch-size", type=positive_int, default=batch)
        verb.add_argument("--height", type=positive_int, default=800)
        verb.add_argument("--width", type=positive_int, default=1066)
        verb.add_argument("--iterations", type=positive_int, default=10)
        verb.add_argument("--warmup", type=non_negative_int, default=3)
        verb.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
        verb.add_argument("--channels-last", action="store_true")
        verb.add_argument("--compile", action="store_true", help="torch.compile the model")
        verb.add_argument("--overrides", type=json_object, default=None, help="model overrides as JSON (small models)")
        verb.set_defaults(handler=handler)


def _print(result: dict) -> int:
    print(json.dumps(result, indent=1))
    return 0


def _run_loader(args: argparse.Namespace) -> int:
    from itersg.bench import machine
    from itersg.config import load_params
    from itersg.data.bench import bench_loader
    from itersg.data.synth import DATASET_NAMES, is_synthetic_dataset
    from itersg.data.vg150 import H5_FILE
    from itersg.files import check_output_folder

    data = load_params(args.params, ["mode=full", *args.assignments])["data"]
    if not (args.root / H5_FILE).is_file():  # the synthetic images are made on first use only
        check_output_folder(args.root, owned=is_synthetic_dataset, writes=DATASET_NAMES, force=args.force,
                            what="a synthetic dataset written by itersg", option="--root")
    result = bench_loader(args.root, args.workers, data, args.images, args.batch_size, args.batches)
    return _print({**result, "machine": machine()})


def _run_box_ap(args: argparse.Namespace) -> int:
    from itersg.evaluation.bench import bench_box_ap

    return _print(bench_box_ap(args.images, compare=not args.no_compare))


def _run_evaluate(args: argparse.Namespace) -> int:
    from itersg.bench import machine
    from itersg.evaluation.bench import bench_evaluate

    return _print({**bench_evaluate(args.images, folder=args.folder), "machine": machine()})


def _run_index(args: argparse.Namespace) -> int:
    from itersg.data.bench import INDEX_NAMES, bench_index, is_index_folder
    from itersg.files import check_output_folder

    check_output_folder(args.root, owned=is_index_folder, writes=INDEX_NAMES, force=args.force,
                        what="a folder written by `itersg bench index`", option="--root")
    return _print(bench_index(args.root))


def _run_metrics(args: argparse.Namespace) -> int:
    from itersg.evaluation.bench import bench_metrics

    path = args.oracle if args.oracle is not None else (DEFAULT_ORACLE if DEFAULT_ORACLE.is_file() else None)
    if path is None:
        return _print(bench_metrics(args.images))
    return _print(bench_metrics(args.images, oracle=_oracle_scores(path)))


class _UncachedSourceLoader(importlib.machinery.SourceFileLoader):
    """Runs a Python file of any name without writing its compiled code (``__pycache__``) beside it."""

    def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:
        pass


def _oracle_scores(path: Path) -> Callable[..., Any]:
    """The ``oracle_scores`` function of the Python file at ``path`` (whatever its name ends with)."""
    advice = "pass the path of tests/evaluation/oracle.py of a source checkout"
    if not path.is_file():
        raise UserError(f"{path}: oracle not found; {advice}")
    loader = _UncachedSourceLoader("itersg_metrics_oracle", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    try:
        loader.exec_module(module)
    except Exception as err:  # the file's own code runs here: any error means it is not the oracle
        reason = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"{path}: cannot be run as the oracle ({type(err).__name__}: {reason}); {advice}") from None
    scores = getattr(module, "oracle_scores", None)
    if not callable(scores):
        raise UserError(f"{path}: has no function oracle_scores; {advice}")
    return scores


def _model_bench_kwargs(args: argparse.Namespace) -> dict:
    return {"batch_size": args.batch_size, "height": args.height, "width": args.width,
            "iterations": args.iterations, "warmup": args.warmup, "precision": args.precision,
            "channels_last": args.channels_last, "compile_model": args.compile, "overrides": args.overrides}


def _run_infer(args: argparse.Namespace) -> int:
    from itersg.bench import bench_infer

    return _print(bench_infer(args.variant, **_model_bench_kwargs(args)))


def _run_train(args: argparse.Namespace) -> int:
    from itersg.bench import bench_train

    return _print(bench_train(args.variant, **_model_bench_kwargs(args)))
