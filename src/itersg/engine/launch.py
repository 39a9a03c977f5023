"""Start a training command once per rank: ``itersg launch [options] -- itersg train ...``.

Which launcher fits is read from the environment:

* inside a SLURM allocation but outside any job step (``SLURM_JOB_ID`` set, ``SLURM_STEP_ID`` not,
  as in a batch script or the workflow's SLURM jobs): ``srun`` with the geometry given here. The
  ranks then form a job step of their own, the only processes that ``--signal=USR1@T`` reaches;
  ``--kill-on-bad-exit`` ends every rank when one fails.
* otherwise, more than one rank on this node: ``torchrun --standalone``.
* otherwise: the command itself.

The launcher replaces this process (``exec``), so no extra process sits between the caller and the
ranks, and the exit status is the launcher's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from itersg.errors import UserError


def in_allocation_outside_step(environ: Mapping[str, str]) -> bool:
    """True in a SLURM batch script (or ``salloc`` shell): srun would start a new job step."""
    return bool(environ.get("SLURM_JOB_ID")) and not environ.get("SLURM_STEP_ID")


def launch_command(command: Sequence[str], nodes: int, ranks_per_node: int, cpus_per_rank: int,
                   environ: Mapping[str, str] | None = None) -> list[str]:
    """The full command line that runs ``command`` as ``nodes`` x ``ranks_per_node`` ranks."""
    env = os.environ if environ is None else environ
    if not command:
        raise UserError("itersg launch: no command given; write it after `--`")
    if in_allocation_outside_step(env):
        return ["srun", f"--nodes={nodes}", f"--ntasks-per-node={ranks_per_node}",
                f"--ntasks={nodes * ranks_per_node}", f"--cpus-per-task={cpus_per_rank}",
                "--kill-on-bad-exit=1", *command]
    if nodes > 1:
        raise UserError(f"train.nodes={nodes} needs a SLURM allocation (SLURM_JOB_ID is not set, or this is "
                        "already a job step); run through `snakemake --profile slurm`, sbatch or salloc, "
                        "or set train.nodes=1")
    if ranks_per_node > 1:
        return ["torchrun", "--standalone", f"--nproc-per-node={ranks_per_node}", "--no-python", *command]
    return list(command)


def exec_launch(command: Sequence[str], nodes: int, ranks_per_node: int, cpus_per_rank: int) -> None:
    """Replace this process with ``launch_command(...)``; print the command line first."""
    argv = launch_command(command, nodes, ranks_per_node, cpus_per_rank)
    print("itersg launch:", " ".join(argv), flush=True)
    try:
        os.execvp(argv[0], argv)
    except OSError as err:
        raise UserError(f"itersg launch: cannot start {argv[0]!r} ({err.strerror}); is it on PATH?") from err
