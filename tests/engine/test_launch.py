"""Reading the launcher's environment: torchrun, srun (SLURM) or a single process."""

from __future__ import annotations

import pytest
import torch

from itersg.engine.distributed import Launch, detect_launch, first_host, select_device, tasks_per_node
from itersg.errors import UserError


def test_single_process_without_launcher_variables():
    assert detect_launch({}) == Launch()


def test_sbatch_script_without_srun_is_one_process():
    """The batch step has SLURM_NTASKS/SLURM_PROCID but no SLURM_STEP_NUM_TASKS."""
    env = {"SLURM_JOB_ID": "12", "SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_NODELIST": "gpu1"}
    assert detect_launch(env).world_size == 1


def test_torchrun_variables():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "node7", "MASTER_PORT": "29400", "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}
    launch = detect_launch(env)
    assert (launch.rank, launch.world_size, launch.local_rank, launch.local_world_size) == (3, 8, 1, 2)
    assert (launch.launcher, launch.master_addr, launch.master_port) == ("torchrun", "node7", 29400)


def test_srun_variables():
    env = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
           "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_STEP_NODELIST": "gpu[03-04]", "SLURM_JOB_ID": "4242"}
    launch = detect_launch(env)
    assert (launch.rank, launch.world_size, launch.local_rank, launch.local_world_size) == (5, 8, 1, 4)
    assert launch.launcher == "slurm" and launch.master_addr == "gpu03"
    assert launch.master_port == 15000 + 4242


def test_tasks_per_node_and_first_host():
    assert tasks_per_node("4(x2),3") == [4, 4, 3]
    assert first_host("cpu1") == "cpu1"
    assert first_host("gpu[07-09,11],cpu1") == "gpu07"


def test_cpu_training_accepts_any_process_count():
    assert select_device(Launch(rank=1, world_size=2), gpus_per_node=0, nodes=1) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPUs")
def test_gpu_job_without_gpu_fails_at_once():
    with pytest.raises(UserError, match=r"train\.gpus=4 but no GPU is visible"):
        select_device(Launch(), gpus_per_node=4, nodes=1)


def test_cpu_device_with_gpus_requested_needs_one_process_per_gpu():
    two_nodes = Launch(rank=3, world_size=4, local_rank=1, local_world_size=2, launcher="slurm")
    assert select_device(two_nodes, gpus_per_node=2, nodes=2, device="cpu") == torch.device("cpu")
    with pytest.raises(UserError, match=r"asks for 4 processes \(one per GPU\) but 2 were started"):
        select_device(Launch(world_size=2), gpus_per_node=2, nodes=2, device="cpu")
