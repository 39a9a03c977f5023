"""SpeaQ's groupwise query specialization: predicate groups, query groups and the group cost mask.

Kim et al., "Groupwise Query Specialization and Quality-Aware Multi-Assignment for Transformer-based
Visual Relationship Detection", CVPR 2024 (mlvlab/SpeaQ, ``SpeaQHungarianMatcher``).

* Predicates are sorted by their count, most frequent first. Each of the first ``num_groups - 1``
  groups takes the most frequent predicates left while their summed count stays below half of the
  count left (so a group can be empty); the last group takes the rest.
* Relation queries are split in proportion to each group's summed count, in contiguous blocks:
  ``num_queries`` (queries per decoder) is shared out, truncating, and the shortfall goes one query
  each to the last groups; each share is then multiplied by the relation-query multiplier.
* A query may only be matched to a ground-truth relation whose predicate is in its group: the
  matching cost of every other pair is raised by ``GROUP_MASK_COST``.

The official code calls the last point the "group mask" (``USE_GROUP_MASK``). It is a matching-cost
mask only; the transformer has no group attention mask, so the groups play no part at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# Added to the matching cost of a (query, target) pair whose groups differ (the official 1e+6).
GROUP_MASK_COST = 1e6


def predicate_groups(counts: Sequence[int] | Tensor, num_groups: int) -> list[Tensor]:
    """Split the predicates into ``num_groups`` groups by frequency (see the module docstring).

    Args:
        counts: [P] relation count of each predicate (integers).
        num_groups: number of groups, at least 1.

    Returns:
        ``num_groups`` tensors of predicate ids, most frequent first within and across groups.
    """
    counts = torch.as_tensor(counts, dtype=torch.int64)
    if num_groups < 1:
        raise ValueError(f"num_groups must be at least 1, got {num_groups}")
    order = torch.argsort(-counts, stable=True)
    sorted_counts = counts[order].tolist()
    sizes, start = [], 0
    for _ in range(num_groups - 1):
        half = sum(sorted_counts[start:]) // 2
        end, total = start, 0
        while end < len(sorted_counts) and total + sorted_counts[end] < half:
            total += sorted_counts[end]
            end += 1
        sizes.append(end - start)
        start = end
    sizes.append(len(sorted_counts) - start)
    return list(torch.split(order, sizes))


def queries_per_group(counts: Sequence[int] | Tensor, groups: Sequence[Tensor], num_queries: int) -> list[int]:
    """Queries of each group before multiplication; they sum to ``num_queries``.

    Each group gets ``trunc(num_queries * group count / total count)``; the queries this leaves over
    are dealt one per group from the last group backwards (evenly first when there are more).
    """
    counts = torch.as_tensor(counts, dtype=torch.int64)
    sums = torch.stack([counts[g].sum() for g in groups])
    shares = (sums * num_queries / sums.sum().clamp(min=1)).int().tolist()
    quotient, remainder = divmod(num_queries - sum(shares), len(groups))
    shares = [s + quotient for s in shares]
    for i in range(remainder):
        shares[-1 - i] += 1
    return shares


def predicate_group_ids(groups: Sequence[Tensor], num_predicates: int) -> Tensor:
    """[num_predicates] group index of every predicate."""
    ids = torch.full((num_predicates,), -1, dtype=torch.int64)
    for g, members in enumerate(groups):
        ids[members] = g
    return ids


def query_group_ids(shares: Sequence[int], multiplier: int) -> Tensor:
    """[sum(shares) * multiplier] group index of every relation query (contiguous blocks)."""
    return torch.repeat_interleave(torch.arange(len(shares)), torch.as_tensor(shares) * multiplier)


def group_cost_mask(query_groups: Tensor, target_groups: Tensor) -> Tensor:
    """[Q, T] cost added to the matching: 0 where query and target share a group, else ``GROUP_MASK_COST``."""
    outside = query_groups[:, None] != target_groups[None, :].to(query_groups.device)
    return outside.float() * GROUP_MASK_COST
