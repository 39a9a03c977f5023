"""``build_criterion``: the criterion that trains a model, IterativeSG (SpeaQ or not) or DETR, EGTR or its
Deformable DETR.

It lives apart from ``criterion.py`` because it picks between ``criterion.py``'s losses and SpeaQ's
(``speaq.py``), and ``speaq.py`` builds on ``criterion.py``: this module imports both, neither imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from itersg.models.config import LossConfig
from itersg.models.losses.criterion import CriterionBase, SetCriterion, TripletCriterion
from itersg.models.losses.egtr_criterion import EGTRCriterion, EGTRLossConfig
from itersg.models.losses.speaq import SpeaQCriterion


def build_criterion(model: nn.Module, config: LossConfig | None = None,
                    predicate_frequencies: Tensor | None = None,
                    predicate_counts: Sequence[int] | Tensor | None = None) -> CriterionBase:
    """The criterion that trains ``model`` (an ``IterativeSG``, SpeaQ or not, or a ``DETR``; an ``EGTR``
    or its ``DeformableDETR``, which take EGTR's own losses and weights and ignore ``config``).

    ``predicate_counts`` [num_predicates] (the dataset's ``predicate_count``) form SpeaQ's predicate
    groups; a SpeaQ model needs them.
    """
    if hasattr(model, "detector") and hasattr(model, "relation"):  # EGTR: no auxiliary detection losses
        return EGTRCriterion(EGTRLossConfig(), num_layers=model.detector.config.decoder_layers)
    model_config = model.config
    if hasattr(model_config, "decoder_layers"):  # EGTR's Deformable DETR, pretrained with every layer's losses
        return EGTRCriterion(EGTRLossConfig(aux_loss=True), num_layers=model_config.decoder_layers)
    num_layers = model_config.transformer.dec_layers
    if not hasattr(model, "rel_class_embed"):
        return SetCriterion(model_config.num_classes, config, num_layers)
    args = (model_config.num_classes, model_config.num_predicates, config, num_layers, predicate_frequencies,
            getattr(model, "aux_head", None))
    if model_config.speaq is None:
        return TripletCriterion(*args)
    if predicate_counts is None:
        raise ValueError("a SpeaQ model needs the predicate counts that form its predicate groups")
    return SpeaQCriterion(*args, speaq=model_config.speaq, predicate_counts=predicate_counts,
                          num_queries=model_config.num_queries)
