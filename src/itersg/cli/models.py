"""Model verbs: ``itersg count-params`` and ``itersg replicate-decoder``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from itersg.catalog import TRANSFORMER_LEVELS
from itersg.cli._params import add_force_argument, add_params_arguments
from itersg.cli._types import json_object
from itersg.errors import UserError

REPLICATED_FORMAT = "itersg-replicated-decoder"  # the checkpoint's ``format``: marks it as written by this verb


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("count-params", help="print a variant's parameter counts as JSON")
    p.add_argument("variant", help="variant name, e.g. r101-detr")
    _add_model_options(p)
    p.add_argument("--detr", action="store_true", help="count the plain DETR of the variant instead")
    p.add_argument("--dicts", help="SpeaQ variants: VG-SGG-dicts-with-attri.json whose predicate counts form the "
                                   "predicate groups to print (default: the one under data.root of --params)")
    p.set_defaults(handler=_run_count_params)

    p = subparsers.add_parser("replicate-decoder",
                              help="initialise IterativeSG from a DETR checkpoint by decoder replication")
    p.add_argument("--detr", required=True, help="DETR checkpoint (.pth; this project's or the reference's)")
    p.add_argument("--out", required=True, help="IterativeSG checkpoint to write ({'model': state_dict})")
    p.add_argument("--variant", default="r101-detr", help="variant whose IterativeSG receives the weights")
    p.add_argument("--num-predicates", type=int, default=None,
                   help="predicate classes (default: the dataset's of --params, else 50)")
    _add_model_options(p)
    add_force_argument(p)
    p.set_defaults(handler=_run_replicate_decoder)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    add_params_arguments(p, default=None, help="params.yaml to take model.overrides and model.transformer_level from")
    p.add_argument("--overrides", type=json_object,
                   help="model overrides as JSON (wins over --params), e.g. '{\"dec_layers\": 2}'")
    p.add_argument("--transformer-level", choices=TRANSFORMER_LEVELS,
                   help="FPN level that feeds the transformer (VoVNet variants; default: the variant's own)")


def _num_predicates(args: argparse.Namespace) -> int:
    """--num-predicates, else the dataset's (data.root of --params), else VG150's 50."""
    if args.num_predicates is not None:
        return args.num_predicates
    if args.params:
        from itersg.config import load_params
        from itersg.data.vg150 import load_vocabulary

        return len(load_vocabulary(load_params(args.params, args.assignments)["data"]["root"]).predicates)
    return 50


def _model_options(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    overrides: dict[str, Any] = {}
    level = None  # the variant's own
    if args.params:
        from itersg.config import load_params

        params = load_params(args.params, args.assignments)
        overrides, level = dict(params["model"]["overrides"]), params["model"]["transformer_level"]
    elif args.assignments:
        raise UserError("--set needs --params")
    if args.overrides is not None:
        overrides = args.overrides
    return overrides, args.transformer_level or level


def _run_count_params(args: argparse.Namespace) -> int:
    from itersg.models.registry import build_detr, build_model, count_parameters

    overrides, level = _model_options(args)
    build = build_detr if args.detr else build_model
    model = build(args.variant, overrides=overrides, transformer_level=level)
    counts: dict[str, Any] = count_parameters(model)
    speaq = getattr(getattr(model, "config", None), "speaq", None) if not args.detr else None
    if speaq is not None:
        counts["relation_queries"] = model.config.num_relation_queries
        predicate_counts = _predicate_counts(args)
        if predicate_counts is not None:
            counts["groups"] = _speaq_groups(predicate_counts, speaq, model.config.num_queries)
    print(json.dumps(counts))
    return 0


def _predicate_counts(args: argparse.Namespace) -> list[int] | None:
    """``predicate_count`` of --dicts, else of the dicts file under data.root of --params, else None."""
    from pathlib import Path

    from itersg.data.vg150 import DICTS_FILE, load_vocabulary
    from itersg.engine.datasets import predicate_counts

    if args.dicts:
        path = Path(args.dicts)
    elif args.params:
        from itersg.config import load_params

        path = Path(load_params(args.params, args.assignments)["data"]["root"]) / DICTS_FILE
        if not path.is_file():
            return None
    else:
        return None
    if path.name != DICTS_FILE or not path.is_file():
        raise UserError(f"--dicts {path}: expected an existing {DICTS_FILE}")
    counts = predicate_counts(str(path.parent), load_vocabulary(path.parent).predicates)
    if counts is None:
        raise UserError(f"{path}: no 'predicate_count' for every predicate")
    return counts.tolist()


def _speaq_groups(predicate_counts: list[int], speaq: Any, num_queries: int) -> dict[str, list[int]]:
    """SpeaQ's predicate groups: predicates and relation queries per group."""
    from itersg.models.losses.query_groups import predicate_groups, queries_per_group

    groups = predicate_groups(predicate_counts, speaq.num_groups)
    shares = queries_per_group(predicate_counts, groups, num_queries)
    return {"predicates": [len(g) for g in groups],
            "relation_queries": [s * speaq.query_multiplier for s in shares]}


def _run_replicate_decoder(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from itersg.engine.checkpoint import atomic_save
    from itersg.files import check_output_file
    from itersg.models.registry import build_model
    from itersg.models.weights.checkpoint_keys import detect_format, load_state, read_state_dict

    check_output_file(args.out, marks={REPLICATED_FORMAT}, what="a checkpoint written by `itersg replicate-decoder`",
                      inputs={"--detr": args.detr, "--params": args.params}, force=args.force)
    overrides, level = _model_options(args)
    state = read_state_dict(args.detr)
    source_format = detect_format(state, args.detr)
    if source_format not in ("detr", "detr-reference"):
        raise UserError(f"{args.detr}: expected a DETR checkpoint, found {source_format} weights; pass the "
                        "output of `itersg pretrain-detr` or the released DETR weights")
    class_weight = state.get("class_embed.weight", state.get("detr.class_embed.weight"))
    if class_weight is None:
        raise UserError(f"{args.detr}: no DETR class head (class_embed.weight); is this a DETR checkpoint?")
    torch.manual_seed(0)  # the predicate head and graph norms are freshly initialised: make that repeatable
    model = build_model(args.variant, num_classes=class_weight.shape[0] - 1,
                        num_predicates=_num_predicates(args), overrides=overrides, transformer_level=level)
    report = load_state(model, state, args.detr)
    out = Path(args.out)
    atomic_save({"format": REPLICATED_FORMAT, "model": model.state_dict(), "variant": args.variant,
                 "replicated_from": str(args.detr)}, out,
                advice="nothing was written: {fix} or choose another --out, then run again")
    print(f"wrote {out}: {report.loaded} tensors from {args.detr} ({report.source_format}), "
          f"{len(report.initialised)} freshly initialised (conditioning layers, predicate head)")
    return 0
