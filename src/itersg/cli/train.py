"""Training verbs: ``itersg train`` (IterativeSG variants) and ``itersg pretrain-detr`` (DETR on VG objects).

Both resume by themselves: rerunning the same command continues from the newest checkpoint in
``OUT/checkpoints``. Exit status 0: ``OUT/model_final.pth`` is written (or already was); 75:
stopped early by SIGTERM/SIGUSR1 or ``--stop-at`` after writing a checkpoint (rerun to continue);
2: a user error (message on stderr).
"""

from __future__ import annotations

import argparse

EPILOG = (
    "Launch one process per GPU: `torchrun --standalone --nproc-per-node N --no-python itersg train ...` on "
    "one node, `srun itersg train ...` (one task per GPU, any number of nodes) or torchrun with a c10d "
    "rendezvous on several nodes. Exit status: 0 done, 75 stopped early with a checkpoint (SIGTERM/SIGUSR1 or "
    "--stop-at; rerun the same command to resume), 2 user error."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train an IterativeSG variant (resumes automatically)",
                              epilog=EPILOG)
    p.add_argument("--variant", required=True, help="variant name, e.g. r101-detr")
    p.add_argument("--init", help="IterativeSG initial weights loaded before iteration 0 (e.g. the "
                                  "replicated DETR or the released DETR-VG .pth); ignored when resuming")
    _add_common(p)
    p.set_defaults(handler=_run_train)

    p = subparsers.add_parser("pretrain-detr", help="pretrain DETR on VG objects (resumes automatically)",
                              epilog=EPILOG)
    p.add_argument("--variant", default="r101-detr",
                   help="variant whose backbone the DETR uses (default r101-detr)")
    _add_common(p)
    p.set_defaults(handler=_run_pretrain)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder: checkpoints/, model_final.pth, logs, curves")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params value, e.g. --set train.iterations=1000 (repeatable)")
    p.add_argument("--stop-at", type=int, metavar="ITERATION",
                   help="write a checkpoint after this iteration and exit with status 75 (for chunked jobs)")


def _run_train(args: argparse.Namespace) -> int:
    from itersg.config import load_params
    from itersg.engine.runner import run_training

    params = load_params(args.params, args.assignments)
    return run_training(params, "train", args.out, variant=args.variant, init=args.init, stop_at=args.stop_at)


def _run_pretrain(args: argparse.Namespace) -> int:
    from itersg.config import load_params
    from itersg.engine.runner import run_training

    params = load_params(args.params, args.assignments)
    return run_training(params, "pretrain_detr", args.out, variant=args.variant, stop_at=args.stop_at)
