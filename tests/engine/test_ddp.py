"""Two training processes (gloo on CPU) stay in lockstep: identical weights on both ranks; torchrun launch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, params: dict, out: str) -> None:
    """One process as torchrun would start it; saves its own weights (parameters) to ``out/rank<r>.pt``.

    Buffers are left out: trained BatchNorm keeps per-process running statistics (DDP broadcasts rank 0's
    before every forward, and rank 0 writes the checkpoints).
    """
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from itersg.engine import distributed
    from itersg.engine.runner import TrainingRun

    launch = distributed.detect_launch()
    device = distributed.select_device(launch, params["train"]["gpus"], params["train"]["nodes"],
                                       params["train"]["device"])
    distributed.init_process_group(launch, device)
    try:
        run = TrainingRun(params, "train", Path(out), "r101-detr", launch, device)
        assert run.run(None, None) == 0
        torch.save({k: v.detach() for k, v in run.model.named_parameters()}, f"{out}/rank{rank}.pt")
    finally:
        distributed.destroy_process_group()


def test_two_gloo_processes_hold_identical_weights(tiny_params, tmp_path):
    params = tiny_params("train.iterations=4")
    mp.spawn(_worker, args=(2, _free_port(), params, str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert all(torch.equal(final["model"][k], rank0[k]) for k in rank0)
    start = (tmp_path / "log.jsonl").read_text().splitlines()[0]
    assert '"world_size": 2' in start and '"launcher": "torchrun"' in start
    assert not (tmp_path / "rank1").exists()  # only rank 0 writes run files


def test_torchrun_launches_the_cli_on_two_processes(tiny_sets, tmp_path):
    """The single-node launch of the workflow: `torchrun --standalone --nproc-per-node 2 --no-python itersg ...`."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "torchrun").exists() or not (bin_dir / "itersg").exists():
        pytest.skip("torchrun / itersg console scripts not installed next to the interpreter")
    sets = tiny_sets("train.iterations=2", "study.eval_iterations=[2]")
    command = [str(bin_dir / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python",
               str(bin_dir / "itersg"), "train", "--variant", "r101-detr", "--out", str(tmp_path),
               "--params", str(PARAMS), *(arg for s in sets for arg in ("--set", s))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    start = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2 and start["launcher"] == "torchrun"
    assert (tmp_path / "model_final.pth").exists()
