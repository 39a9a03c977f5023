"""SpeaQ's matcher and loss: grouped, quality-aware one-to-many matching, once per decoder layer.

mlvlab/SpeaQ ``SpeaQHungarianMatcher.forward_relation`` and ``IterativeRelationCriterion`` with the
released settings (``SpeaQConfig``). For every decoder layer separately (``MATCH_INDEPENDENT``):

1. each ground-truth relation t is repeated k(t) times (``one_to_many.dynamic_k``; the qualities are
   those of this layer's outputs);
2. the cost is IterativeSG's cost of this layer alone (no sum over layers) plus the group mask
   (``query_groups.group_cost_mask``), and the Hungarian assignment pairs queries with the copies;
3. the layer's losses are IterativeSG's, against the repeated targets, normalised by this layer's
   number of matched queries.

The predicate re-weighting and all loss weights are IterativeSG's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from itersg.models.config import LossConfig, MatcherConfig, SpeaQConfig
from itersg.models.losses.criterion import TripletCriterion, num_matched
from itersg.models.losses.matcher import Indices, TripletMatcher, assign
from itersg.models.losses.one_to_many import assignment_quality, dynamic_k, repeat_targets
from itersg.models.losses.query_groups import (
    group_cost_mask,
    predicate_group_ids,
    predicate_groups,
    queries_per_group,
    query_group_ids,
)
from itersg.models.losses.targets import relation_targets


class SpeaQMatcher(nn.Module):
    """One decoder layer's grouped one-to-many matching.

    Args:
        config: cost weights (IterativeSG's).
        speaq: SpeaQ settings.
        predicate_counts: [P] relation count of every predicate (the dataset's ``predicate_count``).
        num_queries: subject/object queries per decoder; relation queries are ``query_multiplier`` times more.
    """

    def __init__(self, config: MatcherConfig, speaq: SpeaQConfig, predicate_counts: Sequence[int] | Tensor,
                 num_queries: int):
        super().__init__()
        counts = torch.as_tensor(predicate_counts, dtype=torch.int64)
        self.speaq = speaq
        self.costs = TripletMatcher(config)
        self.groups = predicate_groups(counts, speaq.num_groups)
        self.shares = queries_per_group(counts, self.groups, num_queries)
        self.register_buffer("predicate_groups", predicate_group_ids(self.groups, len(counts)), persistent=False)
        self.register_buffer("query_groups", query_group_ids(self.shares, speaq.query_multiplier),
                             persistent=False)

    @property
    def queries_per_group(self) -> list[int]:
        """Relation queries of each group (the released model: 290, 116, 88, 106)."""
        return [s * self.speaq.query_multiplier for s in self.shares]

    @torch.no_grad()
    def forward(self, layer: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]]
                ) -> tuple[Indices, list[dict[str, Tensor]]]:
        """Match one layer's outputs [B, Q, .] to ``targets`` (``relation_targets``).

        Returns:
            the assignment per image (query indices, indices into the repeated targets) and the
            repeated targets themselves.
        """
        batch, queries = layer["pred_rel_logits"].shape[:2]
        device = layer["pred_rel_logits"].device
        query_groups = self.query_groups.to(device)
        gathered = {key: torch.cat([t[key] for t in targets]) for key in targets[0]}
        target_groups = self.predicate_groups.to(device)[gathered["rel_labels"]]
        in_group = query_groups[:, None] == target_groups[None, :]
        quality = assignment_quality(layer, gathered, in_group, self.speaq.quality, self.speaq.predicate_weight)
        copies = dynamic_k(quality, [len(t["rel_labels"]) for t in targets], self.speaq.one_to_many_k)
        repeated = repeat_targets(targets, copies)
        gathered = {key: torch.cat([t[key] for t in repeated]) for key in repeated[0]}
        cost = self.costs.layer_cost(layer, gathered).view(batch, queries, -1)
        mask = group_cost_mask(query_groups, self.predicate_groups.to(device)[gathered["rel_labels"]])
        indices = assign(cost + mask.to(cost), [len(t["rel_labels"]) for t in repeated])
        return indices, repeated


class SpeaQCriterion(TripletCriterion):
    """IterativeSG's losses with SpeaQ's per-layer matching (see the module docstring).

    Args (beyond ``TripletCriterion``'s):
        speaq: SpeaQ settings.
        predicate_counts: [P] relation count of every predicate, for the groups.
        num_queries: subject/object queries per decoder.
    """

    def __init__(self, num_classes: int, num_predicates: int, config: LossConfig | None = None,
                 num_layers: int = 6, predicate_frequencies: Tensor | None = None,
                 aux_head: nn.Module | None = None, *, speaq: SpeaQConfig,
                 predicate_counts: Sequence[int] | Tensor, num_queries: int):
        super().__init__(num_classes, num_predicates, config, num_layers, predicate_frequencies, aux_head)
        if len(predicate_counts) != num_predicates:
            raise ValueError(f"expected {num_predicates} predicate counts, got {len(predicate_counts)}")
        self.matcher = SpeaQMatcher(self.config.matcher(), speaq, predicate_counts, num_queries)

    def forward(self, outputs: Mapping, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Unweighted losses of ``outputs`` (``IterativeSG.forward``) against dataset ``targets``."""
        prepared = relation_targets(targets)
        layers = {"": outputs, **{f"_{i}": aux for i, aux in enumerate(outputs.get("aux_outputs", []))}}
        losses = {}
        for suffix, layer in layers.items():
            indices, repeated = self.matcher(layer, prepared)
            num = num_matched(indices, layer["pred_rel_logits"].device)
            losses.update({k + suffix: v for k, v in self.layer_losses(layer, repeated, indices, num).items()})
        losses.update(self.aux_head_losses(outputs, targets))
        return losses
