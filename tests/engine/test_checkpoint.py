"""Checkpoint files: atomic writes (also on a full disk), corrupt ones skipped, pruning."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from itersg.engine.checkpoint import (
    CheckpointWriteError,
    atomic_save,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    newest_valid_checkpoint,
    prune_checkpoints,
    remove_stale_temp_files,
)


def _state(iteration: int, size: int = 4) -> dict:
    return {"model": {"w": torch.full((size,), float(iteration))}, "iteration": iteration, "fingerprint": "a"}


def test_atomic_save_round_trip_leaves_no_temp_file(tmp_path):
    path = atomic_save(_state(7), tmp_path / checkpoint_name(7))
    assert path.name == "model_0000007.pth"
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((4,), 7.0))
    assert [p.name for p in tmp_path.iterdir()] == ["model_0000007.pth"]


def test_failing_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    path = atomic_save(_state(1), tmp_path / "model_0000001.pth")
    before = path.read_bytes()
    with pytest.raises(CheckpointWriteError, match=r"earlier checkpoints .* are intact"):
        atomic_save({"model": {"w": torch.zeros(2)}, "unpicklable": lambda: None}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model_0000001.pth"]


def test_disk_full_keeps_earlier_checkpoints(tmp_path):
    """A real failing write: the file-size limit (EFBIG, like ENOSPC) hits in the middle of torch.save."""
    atomic_save(_state(1, size=10), tmp_path / "model_0000001.pth")
    script = textwrap.dedent(f"""
        import resource, signal, sys, torch
        from itersg.engine.checkpoint import CheckpointWriteError, atomic_save
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        try:
            state = {{"model": {{"w": torch.zeros(100_000)}}, "iteration": 2}}
            atomic_save(state, r"{tmp_path}/model_0000002.pth")
        except CheckpointWriteError as err:
            print(err)
            sys.exit(3)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "could not write" in result.stdout and "rerun the same command" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0000001.pth"]
    assert torch.equal(load_checkpoint(tmp_path / "model_0000001.pth")["model"]["w"], torch.ones(10))


def test_truncated_newest_checkpoint_is_skipped(tmp_path):
    for it in (100, 200):
        atomic_save(_state(it), tmp_path / checkpoint_name(it))
    newest = tmp_path / checkpoint_name(200)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        path, state = newest_valid_checkpoint(tmp_path)
    assert path.name == checkpoint_name(100) and state["iteration"] == 100


def test_checkpoint_of_other_params_is_skipped(tmp_path):
    atomic_save(_state(100), tmp_path / checkpoint_name(100))
    atomic_save({**_state(200), "fingerprint": "b"}, tmp_path / checkpoint_name(200))
    with pytest.warns(UserWarning, match="other training params"):
        path, _ = newest_valid_checkpoint(tmp_path, fingerprint="a")
    assert path.name == checkpoint_name(100)
    assert newest_valid_checkpoint(tmp_path / "missing") is None


def test_prune_keeps_last_k_and_the_evaluated_iterations(tmp_path):
    for it in range(100, 1100, 100):
        atomic_save(_state(it, size=1), tmp_path / checkpoint_name(it))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    pruned = prune_checkpoints(tmp_path, keep_last=3, keep_iterations=[300, 600])
    assert [it for it, _ in list_checkpoints(tmp_path)] == [300, 600, 800, 900, 1000]
    assert len(pruned) == 5 and (tmp_path / "notes.txt").exists()


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / ".tmp-abc.pth").write_bytes(b"half a checkpoint")
    atomic_save(_state(1), tmp_path / checkpoint_name(1))
    remove_stale_temp_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint_name(1)]
