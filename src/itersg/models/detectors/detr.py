"""Plain DETR object detector on the same backbone and transformer (VG pretraining before replication)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from itersg.models.config import ModelConfig
from itersg.models.detectors.transformer import Transformer
from itersg.models.layers.mlp import MLP
from itersg.models.layers.position_encoding import PositionEmbeddingSine
from itersg.models.layers.preprocess import ImageNormalizer, feature_padding_mask


class DETR(nn.Module):
    """Carion et al. 2020, as IterativeSG pretrains it on Visual Genome objects (300 queries).

    Args:
        backbone: a module with the backbone interface (see ``itersg.models.backbones.resnet.ResNet``).
        config: ``num_classes``, ``num_queries`` and the transformer sizes (predicates are unused).
    """

    def __init__(self, backbone: nn.Module, config: ModelConfig):
        super().__init__()
        d = config.transformer.hidden_dim
        self.config = config
        self.backbone = backbone
        self.normalizer = ImageNormalizer(backbone.pixel_mean, backbone.pixel_std, backbone.input_format,
                                          backbone.size_divisibility)
        self.input_proj = nn.Conv2d(backbone.out_channels, d, kernel_size=1)
        self.position_embedding = PositionEmbeddingSine(d // 2)
        self.transformer = Transformer(config.transformer)
        self.query_embed = nn.Embedding(config.num_queries, d)
        self.class_embed = nn.Linear(d, config.num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)

    def forward(self, images: Sequence[Tensor]) -> dict:
        """Images [3, H_i, W_i] (RGB, 0-255) -> ``pred_logits`` [B, Q, num_classes + 1],
        ``pred_boxes`` [B, Q, 4] (normalised cx, cy, w, h) and ``aux_outputs`` (earlier layers)."""
        batch, image_sizes = self.normalizer(images)
        features = self.backbone(batch)
        src = features[self.backbone.out_feature]
        mask = feature_padding_mask(image_sizes, src.shape, batch.shape,
                                    getattr(self.backbone, "out_stride", None)).to(src.device)
        pos = self.position_embedding(mask).to(src.dtype)
        hs = self.transformer(self.input_proj(src), mask, pos, self.query_embed.weight)  # [L, B, Q, C]
        logits, boxes = self.class_embed(hs), self.bbox_embed(hs).sigmoid()
        layers = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits, boxes)]
        return {**layers[-1], "aux_outputs": layers[:-1]}
