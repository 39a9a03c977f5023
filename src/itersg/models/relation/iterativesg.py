"""IterativeSG: a DETR-style scene-graph generator with three interacting decoders.

Khandelwal & Sigal, "Iterative Scene Graph Generation", NeurIPS 2022 (ubc-vision/IterativeSG,
``IterativeRelationDETR`` + ``IterativeRelationTransformer``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from itersg.models.config import ModelConfig
from itersg.models.detectors.transformer import xavier_init_
from itersg.models.layers.mlp import MLP
from itersg.models.layers.position_encoding import PositionEmbeddingSine
from itersg.models.layers.preprocess import ImageNormalizer, feature_padding_mask
from itersg.models.relation.iterative_decoder import IterativeTransformer


class IterativeSG(nn.Module):
    """Backbone -> 1x1 projection -> encoder -> subject/object/relation decoders -> shared heads.

    Args:
        backbone: a module with the backbone interface (see ``itersg.models.backbones.resnet.ResNet``).
        config: classes, queries and transformer sizes.
        aux_head: optional module called on the backbone's feature dict; its output is returned
            under ``"aux_head"`` and its ``loss(aux_outputs, targets, image_sizes)`` joins the losses.
    """

    def __init__(self, backbone: nn.Module, config: ModelConfig, aux_head: nn.Module | None = None):
        super().__init__()
        d, q = config.transformer.hidden_dim, config.num_queries
        self.config = config
        self.backbone = backbone
        self.aux_head = aux_head
        self.normalizer = ImageNormalizer(backbone.pixel_mean, backbone.pixel_std, backbone.input_format,
                                          backbone.size_divisibility)
        self.input_proj = nn.Conv2d(backbone.out_channels, d, kernel_size=1)
        self.position_embedding = PositionEmbeddingSine(d // 2)
        self.transformer = IterativeTransformer(config.transformer)
        self.subject_query_embed = nn.Embedding(q, d)
        self.object_query_embed = nn.Embedding(q, d)
        # SpeaQ: query_multiplier relation queries per subject/object query (600 x 256 when released)
        self.relation_query_embed = nn.Embedding(config.num_relation_queries, d)
        # Subjects and objects share one class head and one box head; the box head also gives the
        # relation's box (trained towards the subject-centre/object-centre box).
        self.class_embed = nn.Linear(d, config.num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.rel_class_embed = nn.Linear(d, config.num_predicates + 1)
        for head in (self.class_embed, self.bbox_embed, self.rel_class_embed):
            xavier_init_(head)  # the reference keeps the heads inside its transformer

    def forward(self, images: Sequence[Tensor]) -> dict:
        """Run the model on a list of images.

        Args:
            images: RGB images [3, H_i, W_i], uint8 (or float on the 0-255 scale).

        Returns:
            dict with, for the last decoder layer,
              ``pred_sub_logits``, ``pred_obj_logits``: [B, Q, num_classes + 1] (last = no object),
              where Q is the number of relation queries (SpeaQ: subject and object query i // m serve
              relation query i, m = ``query_multiplier``, and their outputs are repeated to match);
              ``pred_rel_logits``: [B, Q, num_predicates + 1] (last = no relation);
              ``pred_sub_boxes``, ``pred_obj_boxes``, ``pred_rel_boxes``: [B, Q, 4] normalised
              (cx, cy, w, h) relative to each unpadded image;
            ``aux_outputs``: the same keys for every earlier layer (list, first layer first);
            ``aux_head``: the auxiliary head's outputs (only with an ``aux_head``).
        """
        batch, image_sizes = self.normalizer(images)
        features = self.backbone(batch)
        src = features[self.backbone.out_feature]
        mask = feature_padding_mask(image_sizes, src.shape, batch.shape,
                                    getattr(self.backbone, "out_stride", None)).to(src.device)
        pos = self.position_embedding(mask).to(src.dtype)
        hs_sub, hs_obj, hs_rel = self.transformer(
            self.input_proj(src), mask, pos, self.subject_query_embed.weight,
            self.object_query_embed.weight, self.relation_query_embed.weight)
        layers = self._layer_outputs(hs_sub, hs_obj, hs_rel)
        out = {**layers[-1], "aux_outputs": layers[:-1]}
        if self.aux_head is not None:
            out["aux_head"] = self.aux_head(features)
        return out

    def _layer_outputs(self, hs_sub: Tensor, hs_obj: Tensor, hs_rel: Tensor) -> list[dict[str, Tensor]]:
        """Heads on the stacked decoder features [L, B, Q_e or Q_r, C] -> one output dict per layer."""
        sub_logits, obj_logits = self.class_embed(hs_sub), self.class_embed(hs_obj)
        sub_boxes, obj_boxes = self.bbox_embed(hs_sub).sigmoid(), self.bbox_embed(hs_obj).sigmoid()
        m = hs_rel.shape[2] // hs_sub.shape[2]
        if m > 1:  # SpeaQ: one entity output per relation query, as the official ONLY_PREDICATE_MULTIPLY
            sub_logits, obj_logits, sub_boxes, obj_boxes = (
                t.repeat_interleave(m, dim=2) for t in (sub_logits, obj_logits, sub_boxes, obj_boxes))
        rel_logits, rel_boxes = self.rel_class_embed(hs_rel), self.bbox_embed(hs_rel).sigmoid()
        return [
            {"pred_sub_logits": sub_logits[i], "pred_sub_boxes": sub_boxes[i],
             "pred_obj_logits": obj_logits[i], "pred_obj_boxes": obj_boxes[i],
             "pred_rel_logits": rel_logits[i], "pred_rel_boxes": rel_boxes[i]}
            for i in range(hs_sub.shape[0])
        ]
