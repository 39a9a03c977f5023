"""The order in which training images are seen: deterministic, resumable and the same for any GPU count.

The training stream is an endless sequence of epochs; epoch ``e`` is a permutation of the dataset
drawn from ``(seed, e)``. Iteration ``k`` consumes the global positions ``[k*B, (k+1)*B)`` of the
stream (B = global batch) and rank ``r`` takes the ``r``-th contiguous chunk of ``B / world_size``
of them, so the global batch does not depend on the number of processes. Every sample also gets
its own augmentation seed from ``(seed, epoch, position)``, so random transforms do not depend on
the DataLoader workers or on where a run was interrupted. The position after ``k`` iterations is
``divmod(k*B, len(dataset))`` = (epoch, index within the epoch); it is stored in checkpoints.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from itersg.errors import UserError


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Images per process per iteration; the global batch must split evenly."""
    if global_batch % world_size:
        raise UserError(f"train.batch_size={global_batch} (the global batch) is not divisible by the "
                        f"{world_size} training processes; change train.batch_size or train.gpus")
    return global_batch // world_size


def _mix(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint32)[0])


def stream_position(iteration: int, global_batch: int, dataset_size: int) -> dict[str, int]:
    """(epoch, index within the epoch) of the next sample after ``iteration`` iterations."""
    epoch, index = divmod(iteration * global_batch, dataset_size)
    return {"epoch": epoch, "index": index}


class TrainingBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless batches of ``(dataset index, augmentation seed)`` for one rank, from ``start_iteration``."""

    def __init__(self, dataset_size: int, global_batch: int, rank: int, world_size: int, seed: int,
                 start_iteration: int = 0) -> None:
        if dataset_size < 1:
            raise UserError("the training split is empty; check data.root and the data preparation")
        self.dataset_size = dataset_size
        self.global_batch = global_batch
        self.batch = per_rank_batch(global_batch, world_size)
        self.rank = rank
        self.seed = seed
        self.start_iteration = start_iteration
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.int64)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(_mix(self.seed, epoch))
            self._order = torch.randperm(self.dataset_size, generator=generator)
            self._epoch = epoch
        return self._order

    def _sample(self, position: int) -> tuple[int, int]:
        epoch, index = divmod(position, self.dataset_size)
        return int(self._permutation(epoch)[index]), _mix(self.seed, epoch, index, 1)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        iteration = self.start_iteration
        while True:
            first = iteration * self.global_batch + self.rank * self.batch
            yield [self._sample(p) for p in range(first, first + self.batch)]
            iteration += 1


class SeededSamples(Dataset):
    """Wrap a dataset so that item ``(index, seed)`` runs the random transforms from ``seed``.

    Python, numpy and torch generators are seeded for the call and restored afterwards, so the
    caller's streams (dropout, ...) are untouched.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(seed)
                np.random.seed(seed)  # noqa: NPY002
                torch.manual_seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)  # noqa: NPY002

