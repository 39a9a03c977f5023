"""Training verbs: ``itersg train`` (IterativeSG variants) and ``itersg pretrain-detr`` (DETR on VG objects).

Both resume by themselves: rerunning the same command continues from the newest checkpoint in
``OUT/checkpoints``. Exit status 0: ``OUT/model_final.pth`` is written (or already was); 75:
stopped early by SIGTERM/SIGUSR1 or ``--stop-at`` after writing a checkpoint (rerun to continue);
2: a user error (message on stderr).
"""

from __future__ import annotations

import argparse

from itersg.cli._params import add_force_argument, add_params_arguments
from itersg.cli._types import positive_int

EPILOG = (
    "Launch one process per GPU: `itersg launch --ranks-per-node N -- itersg train ...` (srun in a SLURM job, "
    "torchrun on one node), `torchrun --standalone --nproc-per-node N --no-python itersg train ...` on "
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

    p = subparsers.add_parser(
        "launch", help="run a training command once per rank (srun in a SLURM job, torchrun on one node)",
        description="Start COMMAND as NODES x RANKS_PER_NODE processes: with srun inside a SLURM allocation "
                    "(outside a job step), else with torchrun --standalone for several ranks on this node, "
                    "else directly. The workflow's training rules start every training this way.",
        usage="itersg launch [-h] [--nodes N] [--ranks-per-node R] [--cpus-per-rank C] -- COMMAND ...")
    p.add_argument("--nodes", type=positive_int, default=1, help="nodes (default 1)")
    p.add_argument("--ranks-per-node", type=positive_int, default=1, help="processes per node, one per GPU (default 1)")
    p.add_argument("--cpus-per-rank", type=positive_int, default=1, help="CPUs of each process under srun (default 1)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after `--`")
    p.set_defaults(handler=_run_launch)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder: checkpoints/, model_final.pth, logs, curves")
    add_params_arguments(p)
    p.add_argument("--stop-at", type=positive_int, metavar="ITERATION",
                   help="write a checkpoint after this iteration and exit with status 75 (for chunked jobs)")
    add_force_argument(p)


def _run_train(args: argparse.Namespace) -> int:
    from itersg.config import load_params
    from itersg.engine.runner import run_training

    params = load_params(args.params, args.assignments)
    _check_out(args, params, init=args.init)
    return run_training(params, "train", args.out, variant=args.variant, init=args.init, stop_at=args.stop_at)


def _run_pretrain(args: argparse.Namespace) -> int:
    from itersg.config import load_params
    from itersg.engine.runner import run_training

    params = load_params(args.params, args.assignments)
    _check_out(args, params)
    return run_training(params, "pretrain_detr", args.out, variant=args.variant, stop_at=args.stop_at)


def _check_out(args: argparse.Namespace, params: dict, init: str | None = None) -> None:
    """Refuse, before the model is built, a --out whose files training would destroy."""
    from itersg.cli._params import dataset_inputs
    from itersg.engine.runner import RUN_WRITES, is_run_folder
    from itersg.files import check_output_folder

    inputs = {"--init": init, "--params": args.params, "data.root": dataset_inputs(params["data"]["root"])}
    check_output_folder(args.out, owned=is_run_folder, writes=RUN_WRITES, inputs=inputs, force=args.force,
                        what="a training run folder (only config_resolved.yaml, log.jsonl, dvclive/, checkpoints/, "
                             "model_final.pth, stale-*/)")


def _run_launch(args: argparse.Namespace) -> int:
    from itersg.engine.launch import exec_launch

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    exec_launch(command, args.nodes, args.ranks_per_node, args.cpus_per_rank)
    return 0  # not reached: exec_launch replaces this process
