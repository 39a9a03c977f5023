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

    dvc = verbs.add_parser("dvc", help="write dvc.yaml (study) and demo/dvc.yaml from the Snakemake DAG and "
                           "params.yaml")
    dvc.add_argument("--root", type=Path, default=Path(), help="project root (default: .)")
    dvc.add_argument("--check", action="store_true", help="exit 1 if a dvc.yaml is stale instead of writing them")
    dvc.set_defaults(handler=_run_dvc)

    run = verbs.add_parser(
        "run",
        help=f"build OUTPUTS with Snakemake (the command of each DVC stage); ${PROFILE_VARIABLE}=slurm "
        "submits the job to SLURM",
    )
    run.add_argument("--rule", required=True, help="the Snakemake rule that makes OUTPUTS")
    run.add_argument("--mode", choices=("full", "demo"), required=True, help="the pipeline the job belongs to")
    run.add_argument("outputs", nargs="+", help="output files of one job")
    run.set_defaults(handler=_run_job)


def _run_dvc(args: argparse.Namespace) -> int:
    from itersg.config import load_params
    from itersg.dvc_stages import stale_dvc_files, write_dvc_files

    # As written: the demo's dvc.yaml names the keys that `demo:` overrides, whatever `mode` says.
    params = load_params(args.root / "params.yaml", ["mode=full"])
    if args.check:
        if stale := stale_dvc_files(args.root, params):
            print(f"{', '.join(stale)} stale: run `itersg pipeline dvc`", file=sys.stderr)
            return 1
        print("dvc.yaml files are up to date")
        return 0
    for path in write_dvc_files(args.root, params):
        print(f"wrote {path}")
    return 0


def _run_job(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "snakemake", *args.outputs, "--allowed-rules", args.rule,
               "--forcerun", *args.outputs, "--config", f"mode={args.mode}"]
    if profile := os.environ.get(PROFILE_VARIABLE):
        command += ["--profile", profile]
    print("+", " ".join(command), flush=True)
    return subprocess.run(command).returncode
