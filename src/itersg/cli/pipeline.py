"""`itersg pipeline dvc|run`: the bridge between DVC (versioning) and Snakemake (execution)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PROFILE_VARIABLE = "ITERSG_PROFILE"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pipeline", help="generate dvc.yaml; run one Snakemake job for DVC")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    dvc = verbs.add_parser("dvc", help="write dvc.yaml from the Snakemake DAG and params.yaml")
    dvc.add_argument("--root", type=Path, default=Path(), help="project root (default: .)")
    dvc.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is stale instead of writing it")
    dvc.set_defaults(handler=_run_dvc)

    run = verbs.add_parser(
        "run",
        help=f"build OUTPUTS with Snakemake (the command of each DVC stage); ${PROFILE_VARIABLE}=slurm "
        "submits the job to SLURM",
    )
    run.add_argument("--rule", required=True, help="the Snakemake rule that makes OUTPUTS")
    run.add_argument("outputs", nargs="+", help="output files of one job")
    run.set_defaults(handler=_run_job)


def _run_dvc(args: argparse.Namespace) -> int:
    from itersg.config import load_params
    from itersg.dvc_stages import dvc_yaml, write_dvc_yaml

    params = load_params(args.root / "params.yaml")
    if args.check:
        current = (args.root / "dvc.yaml").read_text() if (args.root / "dvc.yaml").exists() else ""
        if current != dvc_yaml(args.root, params):
            print("dvc.yaml is stale: run `itersg pipeline dvc`", file=sys.stderr)
            return 1
        print("dvc.yaml is up to date")
        return 0
    print(f"wrote {write_dvc_yaml(args.root, params)}")
    return 0


def _run_job(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "snakemake", *args.outputs, "--allowed-rules", args.rule,
               "--forcerun", *args.outputs]
    if profile := os.environ.get(PROFILE_VARIABLE):
        command += ["--profile", profile]
    print("+", " ".join(command), flush=True)
    return subprocess.run(command).returncode
