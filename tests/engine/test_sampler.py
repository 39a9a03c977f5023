"""Data order: deterministic, independent of the process count, resumable mid-epoch."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from itersg.engine.sampler import SeededSamples, TrainingBatchSampler, per_rank_batch, stream_position
from itersg.errors import UserError


def _batches(size, batch, rank, world, start, count, seed=3):
    sampler = TrainingBatchSampler(size, batch, rank, world, seed, start_iteration=start)
    return list(itertools.islice(iter(sampler), count))


def test_every_epoch_is_a_permutation_and_epochs_differ():
    stream = [i for b in _batches(10, 5, 0, 1, 0, 4) for i, _ in b]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert stream[:10] != stream[10:]


def test_global_batch_is_the_same_for_any_number_of_processes():
    single = _batches(13, 4, 0, 1, 0, 9)
    for world in (2, 4):
        ranks = [_batches(13, 4, r, world, 0, 9) for r in range(world)]
        merged = [[item for r in range(world) for item in ranks[r][k]] for k in range(9)]
        assert merged == single


def test_resuming_mid_epoch_continues_the_same_stream():
    straight = _batches(13, 4, 1, 2, 0, 12)
    assert _batches(13, 4, 1, 2, 5, 7) == straight[5:]
    assert stream_position(5, 4, 13) == {"epoch": 1, "index": 7}


def test_global_batch_must_split_evenly():
    assert per_rank_batch(12, 4) == 3
    with pytest.raises(UserError, match="not divisible"):
        per_rank_batch(12, 5)


def test_seeded_samples_are_reproducible_and_leave_the_caller_rngs_alone():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return index, random.random(), float(np.random.rand()), float(torch.rand(()))  # noqa: NPY002

    dataset = SeededSamples(Noisy())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    assert dataset[(2, 99)] == dataset[(2, 99)]
    assert dataset[(2, 99)] != dataset[(2, 100)]
    assert torch.equal(torch.get_rng_state(), before)

