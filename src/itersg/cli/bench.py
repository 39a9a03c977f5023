"""`itersg bench VERB`: measurements for docs/benchmarks.md (JSON on stdout)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from itersg.errors import UserError

DEFAULT_ORACLE = Path("tests/evaluation/oracle.py")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="speed and memory benchmarks (results as JSON)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    index = verbs.add_parser("index", help="open a 108,073-image VG150 index: seconds and peak RSS")
    index.add_argument("--root", type=Path, default=Path("results/bench/vg-real-size"),
                       help="folder for the synthetic real-size h5 (made on first use)")
    index.set_defaults(handler=_run_index)

    metrics = verbs.add_parser("metrics", help="fast scene-graph metrics vs the loop oracle on synthetic images")
    metrics.add_argument("--images", type=int, default=5000, help="number of synthetic images (default 5000)")
    metrics.add_argument("--oracle", type=Path, default=None,
                         help=f"the loop port of the reference evaluator to compare with (default {DEFAULT_ORACLE} "
                              "when run in a source checkout; without one only the fast metrics are timed)")
    metrics.set_defaults(handler=_run_metrics)

    loader = verbs.add_parser("loader", help="training data path (decode, transform, collate): images/s per worker")
    loader.add_argument("--workers", type=int, default=4, help="DataLoader worker processes (default 4)")
    loader.add_argument("--images", type=int, default=400, help="synthetic VG-sized images (default 400)")
    loader.add_argument("--batches", type=int, default=20, help="batches timed after the first (default 20)")
    loader.add_argument("--batch-size", type=int, default=12)
    loader.add_argument("--root", type=Path, default=Path("results/bench/vg-loader"),
                        help="folder for the synthetic images (made on first use)")
    loader.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params whose data.* sizes (full mode) give the training transform")
    loader.set_defaults(handler=_run_loader)

    box_ap = verbs.add_parser("box-ap", help="COCO box AP: faster-coco-eval against pycocotools on synthetic images")
    box_ap.add_argument("--images", type=int, default=5000, help="number of synthetic images (default 5000)")
    box_ap.add_argument("--no-compare", action="store_true", help="time faster-coco-eval only")
    box_ap.set_defaults(handler=_run_box_ap)

    evaluate = verbs.add_parser("evaluate", help="evaluation's CPU work after the model (post-processing, "
                                "predictions file, metrics): ms/image on one thread")
    evaluate.add_argument("--images", type=int, default=1000, help="number of synthetic images (default 1000)")
    evaluate.add_argument("--folder", type=Path, default=None,
                          help="where the temporary predictions file goes (default: the system's temp folder)")
    evaluate.set_defaults(handler=_run_evaluate)

    for name, handler, batch in (("infer", _run_infer, 16), ("train", _run_train, 12)):
        verb = verbs.add_parser(name, help=f"model {name} speed on random images")
        verb.add_argument("--variant", default="r101-detr")
        verb.add_argument("--batch-size", type=int, default=batch)
        verb.add_argument("--height", type=int, default=800)
        verb.add_argument("--width", type=int, default=1066)
        verb.add_argument("--iterations", type=int, default=10)
        verb.add_argument("--warmup", type=int, default=3)
        verb.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
        verb.add_argument("--channels-last", action="store_true")
        verb.add_argument("--compile", action="store_true", help="torch.compile the model")
        verb.add_argument("--overrides", default=None, help="model overrides as JSON (small models)")
        verb.set_defaults(handler=handler)


def _print(result: dict) -> int:
    print(json.dumps(result, indent=1))
    return 0


def _run_loader(args: argparse.Namespace) -> int:
    from itersg.bench import machine
    from itersg.config import load_params
    from itersg.data.bench import bench_loader

    data = load_params(args.params, ["mode=full"])["data"]
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
    from itersg.data.bench import bench_index

    return _print(bench_index(args.root))


def _run_metrics(args: argparse.Namespace) -> int:
    from itersg.evaluation.bench import bench_metrics

    path = args.oracle if args.oracle is not None else (DEFAULT_ORACLE if DEFAULT_ORACLE.is_file() else None)
    if path is None:
        return _print(bench_metrics(args.images))
    if not path.is_file():
        raise UserError(f"{path}: oracle not found; pass the path of tests/evaluation/oracle.py of a source checkout")
    spec = importlib.util.spec_from_file_location("itersg_metrics_oracle", path)
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    return _print(bench_metrics(args.images, oracle=oracle.oracle_scores))


def _model_bench_kwargs(args: argparse.Namespace) -> dict:
    overrides = json.loads(args.overrides) if args.overrides else None
    return {"batch_size": args.batch_size, "height": args.height, "width": args.width,
            "iterations": args.iterations, "warmup": args.warmup, "precision": args.precision,
            "channels_last": args.channels_last, "compile_model": args.compile, "overrides": overrides}


def _run_infer(args: argparse.Namespace) -> int:
    from itersg.bench import bench_infer

    return _print(bench_infer(args.variant, **_model_bench_kwargs(args)))


def _run_train(args: argparse.Namespace) -> int:
    from itersg.bench import bench_train

    return _print(bench_train(args.variant, **_model_bench_kwargs(args)))
