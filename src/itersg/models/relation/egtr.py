"""EGTR's relation head: relations read off the detector's decoder self-attention.

Im et al., "EGTR: Extracting Graph from Transformer for Scene Graph Generation", CVPR 2024
(naver-ai/egtr, ``model/egtr.py``: ``DetrForSceneGraphGeneration``). The head takes the tensors of a
Deformable DETR (``pred_logits``, ``last_hidden_state`` and each decoder layer's self-attention queries
and keys) and scores every ordered pair of object queries:

* per decoder layer l, subject i gets ``proj_q[l]`` of its attention query (un-scaled by sqrt(head_dim)),
  object j ``proj_k[l]`` of its attention key; a last source pairs ``final_sub_proj`` / ``final_obj_proj``
  of the last hidden state;
* ``rel_predictor_gate`` (Linear(2d, 1) + sigmoid) weighs each of the L + 1 concatenated [subject, object]
  sources of a pair, and the gated sources are summed;
* ``rel_predictor`` (MLP 2d -> d -> d -> P) gives predicate logits, ``connectivity_layer`` (MLP 2d -> d ->
  d -> 1) one "any relation" logit, and the frequency bias ``triplet_dist[c_i, c_j]`` of the argmax classes
  is added to the predicate logits (Neural Motifs; frozen tables stored as parameters, as the reference).

Parameter names are the reference's, so a checkpoint key map only drops its ``model.`` prefix.
Deviation (values equal up to float rounding): the reference materialises the [B, N, N, L + 1, 2d] pair
tensor; the gate is linear in the concatenation, so here it is split into a subject and an object term
and the gated sum is two einsums, which never builds that tensor (about L + 1 times less memory).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from itersg.models.layers.mlp import MLP

# ``freq_bias_eps`` that train_egtr.py passes to the model config (not the config class default).
FREQ_BIAS_EPS = 1e-12
INIT_STD = 0.02  # DeformableDetrConfig.init_std, used by the reference's _init_weights for every Linear


class EGTRRelationHead(nn.Module):
    """Predicate and connectivity logits for every ordered pair of the detector's N object queries.

    Args:
        d_model: the decoder width d.
        num_layers: decoder layers L (one ``proj_q`` / ``proj_k`` each).
        num_heads: self-attention heads; head_dim = d / num_heads un-scales the queries.
        num_predicates, num_classes: P and C (no background entries).
        use_freq_bias: add ``triplet_dist[c_i, c_j]`` to the predicate logits.
        fg_matrix: [C + 1, C + 1, P] training triplet counts (``predicate_statistics``); without them the
            frequency tables are zeros until a checkpoint or ``load_statistics`` fills them.
        freq_bias_eps, use_log_softmax: how the tables are made from the counts (``frequency_tables``).
    """

    def __init__(self, d_model: int = 256, num_layers: int = 6, num_heads: int = 8, num_predicates: int = 50,
                 num_classes: int = 150, use_freq_bias: bool = True, fg_matrix: np.ndarray | Tensor | None = None,
                 freq_bias_eps: float = FREQ_BIAS_EPS, use_log_softmax: bool = False):
        super().__init__()
        self.d_model, self.num_layers, self.use_freq_bias = d_model, num_layers, use_freq_bias
        self.head_dim = d_model // num_heads
        self.freq_bias_eps, self.use_log_softmax = freq_bias_eps, use_log_softmax
        self.proj_q = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(num_layers))
        self.proj_k = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(num_layers))
        self.final_sub_proj = nn.Linear(d_model, d_model)
        self.final_obj_proj = nn.Linear(d_model, d_model)
        self.rel_predictor_gate = nn.Linear(2 * d_model, 1)
        self.rel_predictor = MLP(2 * d_model, d_model, num_predicates, 3)
        self.connectivity_layer = MLP(2 * d_model, d_model, 1, 3)
        self.triplet_dist = nn.Parameter(torch.zeros(num_classes + 1, num_classes + 1, num_predicates),
                                         requires_grad=False)
        self.rel_dist = nn.Parameter(torch.zeros(num_predicates), requires_grad=False)
        self.reset_parameters()
        if fg_matrix is not None:
            self.load_statistics(fg_matrix)

    def reset_parameters(self) -> None:
        """The reference's initialisation: every Linear weight N(0, 0.02), biases zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=INIT_STD)
                nn.init.zeros_(module.bias)

    @torch.no_grad()
    def load_statistics(self, fg_matrix: np.ndarray | Tensor) -> None:
        """Fill the frozen tables from [C + 1, C + 1, P] triplet counts."""
        triplet_dist, rel_dist = frequency_tables(fg_matrix, self.freq_bias_eps, self.use_log_softmax)
        self.triplet_dist.copy_(triplet_dist)
        self.rel_dist.copy_(rel_dist)

    def forward(self, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Relation logits from the detector's outputs.

        Args:
            outputs: ``pred_logits`` [B, N, C], ``last_hidden_state`` [B, N, d], ``decoder_queries`` and
                ``decoder_keys`` [L, B, N, d] (heads concatenated; queries scaled by head_dim ** -0.5).

        Returns:
            ``pred_rel`` [B, N, N, P] predicate logits (frequency bias included) and ``pred_connectivity``
            [B, N, N, 1] logits; pair (i, j) has subject query i and object query j.
        """
        subjects, objects = self.relation_sources(outputs)
        features, _ = self.gated_features(subjects, objects)
        pred_rel = self.rel_predictor(features)
        if self.use_freq_bias:
            pred_rel = pred_rel + self.frequency_bias(outputs["pred_logits"])
        return {"pred_rel": pred_rel, "pred_connectivity": self.connectivity_layer(features)}

    def relation_sources(self, outputs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Projected subject and object sources, each [B, N, L + 1, d] (the last hidden state's last)."""
        unscale = self.head_dim ** 0.5
        subjects = [proj(q * unscale) for proj, q in zip(self.proj_q, outputs["decoder_queries"], strict=True)]
        objects = [proj(k) for proj, k in zip(self.proj_k, outputs["decoder_keys"], strict=True)]
        hidden = outputs["last_hidden_state"]
        subjects.append(self.final_sub_proj(hidden))
        objects.append(self.final_obj_proj(hidden))
        return torch.stack(subjects, dim=-2), torch.stack(objects, dim=-2)

    def gated_features(self, subjects: Tensor, objects: Tensor) -> tuple[Tensor, Tensor]:
        """Gated sum over the L + 1 sources of every pair's [subject_i, object_j] concatenation.

        Args:
            subjects, objects: [B, N, S, d] per query and source.

        Returns:
            features [B, N, N, 2d] = sum_s g_ijs [subjects_is, objects_js] and the gates g [B, N, N, S],
            g_ijs = sigmoid(gate([subjects_is, objects_js])).
        """
        weight, bias = self.rel_predictor_gate.weight[0], self.rel_predictor_gate.bias
        sub_term = subjects @ weight[: self.d_model]  # [B, N, S]
        obj_term = objects @ weight[self.d_model:]  # [B, N, S]
        gates = torch.sigmoid(sub_term[:, :, None] + obj_term[:, None] + bias)  # [B, N(i), N(j), S]
        sub = torch.einsum("bijs,bisd->bijd", gates, subjects)
        obj = torch.einsum("bijs,bjsd->bijd", gates, objects)
        return torch.cat([sub, obj], dim=-1), gates

    def frequency_bias(self, logits: Tensor) -> Tensor:
        """``triplet_dist[c_i, c_j]`` [B, N, N, P] for the argmax classes c [B, N] of ``logits`` [B, N, C]."""
        classes = logits.argmax(-1)
        return self.triplet_dist[classes[:, :, None], classes[:, None, :]]


def frequency_tables(fg_matrix: np.ndarray | Tensor, eps: float = FREQ_BIAS_EPS,
                     use_log_softmax: bool = False) -> tuple[Tensor, Tensor]:
    """The reference's frozen tables from triplet counts fg [C + 1, C + 1, P].

    As ``DetrForSceneGraphGeneration.__init__`` writes it (operator precedence included):
    ``triplet_dist = log(fg + eps / (fg.sum(-1) + eps))`` in float32 (``log_softmax`` over predicates
    instead of ``log`` with ``use_log_softmax``), i.e. log of the raw count for a seen triplet, about
    log(eps / n_pair) for an unseen predicate of a seen pair and 0 for an unseen pair; and
    ``rel_dist = fg.sum((0, 1)) / (fg.sum() + eps)`` [P].
    """
    fg = np.asarray(fg_matrix.cpu() if isinstance(fg_matrix, Tensor) else fg_matrix, dtype=np.float64)
    rel_dist = torch.as_tensor(fg.sum(axis=(0, 1)) / (fg.sum() + eps), dtype=torch.float32)
    triplet_dist = torch.as_tensor(fg + eps / (fg.sum(2, keepdims=True) + eps), dtype=torch.float32)
    triplet_dist = F.log_softmax(triplet_dist, dim=-1) if use_log_softmax else triplet_dist.log()
    return triplet_dist, rel_dist


def overlapping_pairs(sub_boxes: np.ndarray, obj_boxes: np.ndarray, pixel_offset: float = 1.0) -> np.ndarray:
    """[R] bool: the x1y1x2y2 boxes intersect, as Neural Motifs' ``bbox_overlaps(...) > 0`` (+1 pixel)."""
    width = np.minimum(sub_boxes[:, 2], obj_boxes[:, 2]) - np.maximum(sub_boxes[:, 0], obj_boxes[:, 0])
    height = np.minimum(sub_boxes[:, 3], obj_boxes[:, 3]) - np.maximum(sub_boxes[:, 1], obj_boxes[:, 1])
    return (width + pixel_offset > 0) & (height + pixel_offset > 0)


def predicate_statistics(images: Iterable[tuple[np.ndarray | Tensor, np.ndarray | Tensor, np.ndarray | Tensor]],
                         num_classes: int = 150, num_predicates: int = 50, must_overlap: bool = True,
                         unique: bool = True, pixel_offset: float = 1.0) -> np.ndarray:
    """Training triplet counts fg [C + 1, C + 1, P] int64 (the reference's ``vg_get_statistics``).

    Args:
        images: per training image (labels [M] 0..C-1, boxes [M, 4] x1y1x2y2 pixels, relations [R, 3]
            (subject index, object index, predicate 0..P-1)).
        must_overlap: count only relations whose boxes intersect (``overlapping_pairs``). The reference's
            function ignores this flag; its counts come from RelTR's rel.json, whose training relations
            Neural Motifs' loader had already filtered so (``filter_non_overlap``, boxes at BOX_SCALE 1024).
        unique: count each distinct (subject, object, predicate) row of an image once (rel.json was made
            with np.unique per image).
        pixel_offset: the +1 of the Motifs box convention; 0 for continuous boxes.

    Returns:
        counts indexed [subject class, object class, predicate]; row and column C (the reference's extra
        entry) stay 0: the reference counts no background pairs.
    """
    fg = np.zeros((num_classes + 1, num_classes + 1, num_predicates), dtype=np.int64)
    for labels, boxes, relations in images:
        labels, boxes = np.asarray(labels, dtype=np.int64), np.asarray(boxes, dtype=np.float64)
        relations = np.asarray(relations, dtype=np.int64).reshape(-1, 3)
        if unique:
            relations = np.unique(relations, axis=0)
        if must_overlap and len(relations):
            relations = relations[overlapping_pairs(boxes[relations[:, 0]], boxes[relations[:, 1]], pixel_offset)]
        np.add.at(fg, (labels[relations[:, 0]], labels[relations[:, 1]], relations[:, 2]), 1)
    return fg
