"""Scene-Graph-Benchmark's relation-stage losses (SGB, ``relation_head/loss.py``: ``RelationLossComputation``).

Two cross-entropies, each averaged over all rows of the whole batch (SGB concatenates the images'
relations, and the images' objects, before ``nn.CrossEntropyLoss()``: no per-image averaging), with
weight 1 each (the trainer sums the loss dict), no class weights (SGB computes 1 / REL_PROP predicate
weights but never uses them):

* ``loss_rel``: relation logits [R, 51] against the sampled pair labels (0 background, 1..50);
* ``loss_refine_obj``: the predictor's refined object logits [N, 151] against the boxes' labels (the
  ground truth in PredCls/SGCls, the assigned labels in SGDet, 0 for unmatched detections). SGB
  returns it in every mode; in PredCls the Motifs, VCTree and Transformer contexts give the ground
  truth one-hot times +-1000 as object logits, which makes it 0 without gradient.

``LABEL_SMOOTHING_LOSS`` (off in SGB's configs) uses ``Label_Smoothing_Regression(e=0.01)``: target
(1 - e) one-hot + e / K, which is PyTorch's ``label_smoothing=e``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

SGB_LABEL_SMOOTHING = 0.01  # Label_Smoothing_Regression(e=0.01), when LABEL_SMOOTHING_LOSS is on


def sgb_relation_loss(relation_logits: Tensor, relation_labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of relation logits [R, 51] (all images' pairs concatenated) against labels [R]
    (0 background, 1..50) -> scalar (nats)."""
    return F.cross_entropy(relation_logits, relation_labels.long(), label_smoothing=label_smoothing)


def sgb_object_loss(object_logits: Tensor, object_labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of refined object logits [N, 151] (all images' boxes concatenated) against
    labels [N] (0 background, 1..150) -> scalar (nats)."""
    return F.cross_entropy(object_logits, object_labels.long(), label_smoothing=label_smoothing)


def sgb_relation_losses(relation_logits: Tensor, relation_labels: Tensor, object_logits: Tensor,
                        object_labels: Tensor, label_smoothing: float = 0.0) -> dict[str, Tensor]:
    """SGB's two losses under SGB's names: ``loss_rel`` and ``loss_refine_obj`` (shapes as above)."""
    return {"loss_rel": sgb_relation_loss(relation_logits, relation_labels, label_smoothing),
            "loss_refine_obj": sgb_object_loss(object_logits, object_labels, label_smoothing)}
