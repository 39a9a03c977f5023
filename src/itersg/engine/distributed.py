"""Process-group setup for one process per GPU, launched by ``torchrun`` or by SLURM's ``srun``.

Which launcher started us is read from the environment:

* torchrun (single node ``--standalone`` or multi-node c10d rendezvous): ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``.
* srun: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` (only set inside a job step, so a batch script
  that was not started with srun runs as one process), ``SLURM_LOCALID``,
  ``SLURM_STEP_TASKS_PER_NODE``, ``SLURM_NODEID``, ``SLURM_STEP_NODELIST`` / ``SLURM_NODELIST``
  (``MASTER_ADDR`` = the first host's ``NodeAddr``, via ``scontrol``) and ``SLURM_JOB_ID``
  (``MASTER_PORT`` = 15000 + job id mod 20000); ``MASTER_ADDR``/``MASTER_PORT`` win when set.
* neither: a single process.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from itersg.errors import UserError


@dataclass(frozen=True)
class Launch:
    """Where this process sits among all training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    launcher: str = "none"  # "torchrun", "slurm" or "none"
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect_launch(environ: Mapping[str, str] | None = None) -> Launch:
    """Read the launcher's environment variables (see the module docstring)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        return Launch(
            rank=int(env["RANK"]), world_size=world, local_rank=int(env.get("LOCAL_RANK", 0)),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)), launcher="torchrun",
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"), master_port=int(env.get("MASTER_PORT", 29500)),
        )
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        world = int(env["SLURM_STEP_NUM_TASKS"])
        per_node = tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE", str(world)))
        node = int(env.get("SLURM_NODEID", 0))
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST", "127.0.0.1")
        return Launch(
            rank=int(env["SLURM_PROCID"]), world_size=world, local_rank=int(env.get("SLURM_LOCALID", 0)),
            local_world_size=per_node[min(node, len(per_node) - 1)], launcher="slurm",
            master_addr=env.get("MASTER_ADDR") or node_address(first_host(nodelist)),
            master_port=int(env.get("MASTER_PORT") or 15000 + int(env.get("SLURM_JOB_ID", 0)) % 20000),
        )
    return Launch()


def tasks_per_node(spec: str) -> list[int]:
    """Expand SLURM's tasks-per-node notation: ``"4(x2),3"`` -> ``[4, 4, 3]``."""
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            raise UserError(f"cannot parse SLURM tasks per node {spec!r}; set LOCAL_WORLD_SIZE instead")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def first_host(nodelist: str) -> str:
    """The first host name of a SLURM node list (``"gpu[03-05,07],cpu1"`` -> ``"gpu03"``)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True)
        hosts = out.stdout.split()
        if hosts:
            return hosts[0]
    except (OSError, subprocess.SubprocessError):
        pass
    match = re.match(r"([^,\[]+)(?:\[([^-,\]]+))?", nodelist)
    if not match:
        return nodelist
    return match.group(1) + (match.group(2) or "")


def node_address(node: str) -> str:
    """The address SLURM reaches ``node`` at (its ``NodeAddr``), which need not be the node's name."""
    try:
        out = subprocess.run(["scontrol", "show", "node", "--oneliner", node], capture_output=True, text=True,
                             timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return node
    match = re.search(r"\bNodeAddr=(\S+)", out.stdout)
    return match.group(1) if match else node


def select_device(launch: Launch, gpus_per_node: int, nodes: int, device: str = "auto") -> torch.device:
    """The device of this process; fail at once when the processes or GPUs do not match the params.

    ``device`` is ``train.device``: ``auto`` computes on CUDA when ``gpus_per_node`` > 0, else on the
    CPU; ``cpu`` computes on the CPU with one gloo process per requested GPU; ``cuda`` insists on GPUs.
    With GPUs, one process per GPU is required, and each process takes GPU ``local_rank`` (or GPU 0
    when SLURM binds one GPU per task).
    """
    if device == "cpu" or (device == "auto" and gpus_per_node == 0):
        _check_world_size(launch, gpus_per_node, nodes)
        return torch.device("cpu")
    if gpus_per_node == 0:
        raise UserError("train.device=cuda but train.gpus=0; set train.gpus to the GPUs per node")
    count = torch.cuda.device_count()
    names = visible_gpus()
    if count == 0:
        raise UserError(f"train.gpus={gpus_per_node} but no GPU is visible to this process "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); run on a "
                        "GPU node, or set train.gpus=0 (or train.device=cpu) for CPU training")
    _check_world_size(launch, gpus_per_node, nodes)
    if count >= launch.local_world_size and count >= gpus_per_node:
        return torch.device("cuda", launch.local_rank)
    if count == 1 and launch.local_world_size > 1:  # srun --gpus-per-task=1: each task sees its own GPU
        return torch.device("cuda", 0)
    raise UserError(f"train.gpus={gpus_per_node} but only {count} GPU(s) are visible on this node: {names}; "
                    "request more GPUs for the job or lower train.gpus")


def _check_world_size(launch: Launch, gpus_per_node: int, nodes: int) -> None:
    """One process per requested GPU (any number of processes when ``train.gpus`` is 0)."""
    expected = gpus_per_node * nodes
    if gpus_per_node and launch.world_size != expected:
        raise UserError(f"train.gpus={gpus_per_node} x train.nodes={nodes} asks for {expected} processes "
                        f"(one per GPU) but {launch.world_size} were started (launcher: {launch.launcher}); "
                        f"start with `itersg launch --nodes {nodes} --ranks-per-node {gpus_per_node} -- itersg "
                        "train ...` (srun or torchrun), or change train.gpus")


def rank_info(launch: Launch, device: torch.device) -> dict[str, Any]:
    """Where this process runs, for the run's log: rank, local rank, world size, node, process id, rendezvous,
    device."""
    return {"rank": launch.rank, "local_rank": launch.local_rank, "world_size": launch.world_size,
            "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(), "pid": os.getpid(),
            "master_addr": launch.master_addr, "master_port": launch.master_port, "device": str(device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def visible_gpus() -> list[str]:
    """Names of the CUDA devices this process can see."""
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def init_process_group(launch: Launch, device: torch.device, timeout_minutes: float = 30) -> None:
    """Join the process group (NCCL on GPU, gloo on CPU); a no-op for a single process."""
    if not launch.distributed:
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    os.environ.setdefault("MASTER_ADDR", launch.master_addr)
    os.environ.setdefault("MASTER_PORT", str(launch.master_port))
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo", init_method="env://", rank=launch.rank,
        world_size=launch.world_size, timeout=timedelta(minutes=timeout_minutes),
        device_id=device if device.type == "cuda" else None,
    )


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    if not is_dist():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """For each flag: True on every rank when it is true on at least one (one tiny all-reduce)."""
    if not is_dist():
        return list(flags)
    values = torch.tensor([int(f) for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over ranks (in place, returned for convenience)."""
    if is_dist():
        dist.all_reduce(values)
    return values
