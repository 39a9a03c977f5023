"""Deformable DETR exactly as EGTR (naver-ai/egtr, ``model/deformable_detr.py``) configures it.

The plain detector (no box refinement, no two-stage): timm ResNet-50 C3-C5 plus one stride-2 level from C5,
each projected to ``d_model`` (conv + GroupNorm(32)); HF's sine position embedding (normalised, half-pixel
offset) plus a learned level embedding; a deformable encoder; a decoder whose self-attention is standard
multi-head attention (its queries and keys are returned for EGTR's relation head) and whose cross-attention
is deformable; one class head and one box head shared by all decoder layers. Module names follow the
official ``DeformableDetrModel`` so its checkpoints load under a prefix change
(``itersg.models.weights.egtr_keys``).

Masks: the project's convention inside (True = padding); HF's pixel mask is the complement (1 = valid), used
here only where the official code computes with it (position embedding, valid ratios).

Imports ``itersg.models.layers`` and ``backbones`` only, as ``itersg.models.detectors`` allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from itersg.models.backbones.timm_resnet import TimmResNet
from itersg.models.layers.mlp import MLP
from itersg.models.layers.ms_deform_attn import MultiscaleDeformableAttention
from itersg.models.layers.preprocess import ImageNormalizer, feature_padding_mask

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}
SLOW_PARAMETERS = ("backbone", "reference_points", "sampling_offsets")
Shapes = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class DeformableDetrConfig:
    """SenseTime/deformable-detr's architecture with EGTR's VG settings (200 queries, 150 classes)."""

    d_model: int = 256
    encoder_layers: int = 6
    decoder_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 1024
    num_feature_levels: int = 4
    encoder_n_points: int = 4
    decoder_n_points: int = 4
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "relu"
    num_queries: int = 200
    num_classes: int = 150
    backbone: str = "resnet50"
    backbone_widths: tuple[int, ...] | None = None  # timm's stage widths; None = the model's own
    init_std: float = 0.02


def sine_position_embedding(valid: Tensor, num_feats: int = 128, temperature: float = 10000.0) -> Tensor:
    """HF ``DeformableDetrSinePositionEmbedding(normalize=True)``: valid mask [B, H, W] (True = real pixel)
    -> [B, 2 * num_feats, H, W], (y, x) halves; positions are (cumsum - 0.5) / valid extent * 2 pi."""
    y_embed = valid.cumsum(1, dtype=torch.float32)
    x_embed = valid.cumsum(2, dtype=torch.float32)
    y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + 1e-6) * (2 * math.pi)
    x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + 1e-6) * (2 * math.pi)
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=valid.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos_x, pos_y = x_embed[..., None] / dim_t, y_embed[..., None] / dim_t  # [B, H, W, F]
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def valid_ratios(valid: Tensor) -> Tensor:
    """Valid mask [B, H, W] -> [B, 2]: the (width, height) fraction of real pixels (first row / column)."""
    height = valid[:, :, 0].sum(1).float() / valid.shape[1]
    width = valid[:, 0, :].sum(1).float() / valid.shape[2]
    return torch.stack([width, height], -1)


def encoder_reference_points(shapes: Shapes, ratios: Tensor) -> Tensor:
    """Every pixel centre of every level as a reference point on every level: [B, S, L, 2] (x, y), from the
    level shapes and the valid ratios [B, L, 2] (coordinates relative to each image's valid region)."""
    points = []
    for level, (height, width) in enumerate(shapes):
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=ratios.device),
            torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=ratios.device), indexing="ij")
        ys = ys.reshape(-1)[None] / (ratios[:, None, level, 1] * height)
        xs = xs.reshape(-1)[None] / (ratios[:, None, level, 0] * width)
        points.append(torch.stack((xs, ys), -1))
    return torch.cat(points, 1)[:, :, None] * ratios[:, None]


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class FeedForward(nn.Module):
    """The post-norm FFN block of both layer kinds: ``fc1`` -> activation -> ``fc2``, residual, LayerNorm."""

    def __init__(self, config: DeformableDetrConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.activation = ACTIVATIONS[config.activation]
        self.dropout = nn.Dropout(config.dropout)
        self.activation_dropout = nn.Dropout(config.activation_dropout)

    def feed_forward(self, x: Tensor) -> Tensor:
        y = self.fc2(self.activation_dropout(self.activation(self.fc1(x))))
        return self.final_layer_norm(x + self.dropout(y))


class DeformableEncoderLayer(FeedForward):
    """Deformable self-attention over all levels, then the FFN (post-norm)."""

    def __init__(self, config: DeformableDetrConfig):
        super().__init__(config)
        self.self_attn = MultiscaleDeformableAttention(config.d_model, config.num_heads, config.num_feature_levels,
                                                       config.encoder_n_points)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, shapes: Shapes,
                padding_mask: Tensor) -> Tensor:
        """src, pos: [B, S, C]; reference_points: [B, S, L, 2]; padding_mask: [B, S]. Returns [B, S, C]."""
        attended = self.self_attn(src, src, reference_points, shapes, pos, padding_mask)
        return self.feed_forward(self.self_attn_layer_norm(src + self.dropout(attended)))


class QueryKeySelfAttention(nn.Module):
    """HF ``DeformableDetrMultiheadAttention``: position embedding added to queries and keys, not values;
    queries multiplied by head_dim ** -0.5 right after ``q_proj``. Returns them and the keys as well."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """hidden_states, pos: [B, N, C] -> output, scaled queries, keys: each [B, N, C] (heads concatenated)."""
        with_pos = hidden_states + pos
        queries, keys = self.q_proj(with_pos) * self.scaling, self.k_proj(with_pos)
        q, k, v = (self._split(t) for t in (queries, keys, self.v_proj(hidden_states)))  # [B, M, N, C/M]
        weights = self.dropout((q @ k.transpose(-2, -1)).softmax(-1))  # [B, M, N, N]
        attended = (weights @ v).transpose(1, 2).flatten(2)
        return self.out_proj(attended), queries, keys

    def _split(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)


class DeformableDecoderLayer(FeedForward):
    """Self-attention over the queries, deformable cross-attention to the encoder output, FFN (post-norm)."""

    def __init__(self, config: DeformableDetrConfig):
        super().__init__(config)
        self.self_attn = QueryKeySelfAttention(config.d_model, config.num_heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.encoder_attn = MultiscaleDeformableAttention(config.d_model, config.num_heads,
                                                          config.num_feature_levels, config.decoder_n_points)
        self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Tensor, reference_points: Tensor, shapes: Shapes,
                padding_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tgt, query_pos: [B, N, C]; memory: [B, S, C]; reference_points: [B, N, L, 2]; padding_mask: [B, S].
        Returns the output, the self-attention's scaled queries and its keys, each [B, N, C]."""
        attended, queries, keys = self.self_attn(tgt, query_pos)
        tgt = self.self_attn_layer_norm(tgt + self.dropout(attended))
        attended = self.encoder_attn(tgt, memory, reference_points, shapes, query_pos, padding_mask)
        tgt = self.encoder_attn_layer_norm(tgt + self.dropout(attended))
        return self.feed_forward(tgt), queries, keys


class DeformableEncoder(nn.Module):
    def __init__(self, config: DeformableDetrConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(DeformableEncoderLayer(config) for _ in range(config.encoder_layers))

    def forward(self, src: Tensor, pos: Tensor, shapes: Shapes, ratios: Tensor, padding_mask: Tensor) -> Tensor:
        """src, pos: [B, S, C]; ratios: [B, L, 2]; padding_mask: [B, S]. Returns [B, S, C]."""
        reference_points = encoder_reference_points(shapes, ratios)
        src = self.dropout(src)  # the official encoder drops out its input
        for layer in self.layers:
            src = layer(src, pos, reference_points, shapes, padding_mask)
        return src


class DeformableDecoder(nn.Module):
    def __init__(self, config: DeformableDetrConfig):
        super().__init__()
        self.layers = nn.ModuleList(DeformableDecoderLayer(config) for _ in range(config.decoder_layers))

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Tensor, reference_points: Tensor, shapes: Shapes,
                ratios: Tensor, padding_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """reference_points: [B, N, 2] in the valid region, fixed for all layers (no box refinement).
        Returns every layer's output, scaled self-attention queries and keys, each [L_dec, B, N, C]."""
        points = reference_points[:, :, None] * ratios[:, None]  # [B, N, L, 2] in padded-map coordinates
        outputs, queries, keys = [], [], []
        for layer in self.layers:
            tgt, q, k = layer(tgt, query_pos, memory, points, shapes, padding_mask)
            outputs.append(tgt)
            queries.append(q)
            keys.append(k)
        return torch.stack(outputs), torch.stack(queries), torch.stack(keys)


def input_projections(channels: Sequence[int], d_model: int, num_levels: int) -> nn.ModuleList:
    """1x1 conv + GroupNorm(32) per backbone level, then 3x3/2 conv + GroupNorm(32) per extra level."""
    layers = [nn.Sequential(nn.Conv2d(c, d_model, kernel_size=1), nn.GroupNorm(32, d_model)) for c in channels]
    in_channels = channels[-1]
    for _ in range(num_levels - len(channels)):
        layers.append(nn.Sequential(nn.Conv2d(in_channels, d_model, kernel_size=3, stride=2, padding=1),
                                    nn.GroupNorm(32, d_model)))
        in_channels = d_model
    return nn.ModuleList(layers)


class DeformableDETR(nn.Module):
    """The plain Deformable DETR of EGTR (sigmoid focal classification, no background logit).

    Args:
        backbone: a multi-level backbone (``TimmResNet`` interface: ``out_features``, ``feature_channels``, the
            normaliser attributes); built from ``config.backbone`` when None.
        config: the sizes; ``DeformableDetrConfig()`` is EGTR's VG detector (40,041,308 parameters).
    """

    def __init__(self, backbone: nn.Module | None = None, config: DeformableDetrConfig | None = None):
        super().__init__()
        config = config or DeformableDetrConfig()
        backbone = backbone if backbone is not None else TimmResNet(config.backbone, widths=config.backbone_widths)
        if config.num_feature_levels < len(backbone.out_features):
            raise ValueError(f"num_feature_levels {config.num_feature_levels} < the backbone's "
                             f"{len(backbone.out_features)} levels")
        d = config.d_model
        self.config = config
        self.backbone = backbone
        self.normalizer = ImageNormalizer(backbone.pixel_mean, backbone.pixel_std, backbone.input_format,
                                          backbone.size_divisibility)
        self.input_proj = input_projections(backbone.feature_channels, d, config.num_feature_levels)
        self.query_position_embeddings = nn.Embedding(config.num_queries, 2 * d)
        self.encoder = DeformableEncoder(config)
        self.decoder = DeformableDecoder(config)
        self.level_embed = nn.Parameter(torch.empty(config.num_feature_levels, d))
        self.reference_points = nn.Linear(d, 2)
        self.class_embed = nn.Linear(d, config.num_classes)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """HF's ``_init_weights`` outside the backbone (Linear/Conv2d/Embedding ~ N(0, init_std), zero biases;
        deformable attention's own scheme; Xavier ``reference_points``; N(0, 1) ``level_embed``), then the
        detection heads' construction-time init of the official code: focal prior bias -log(99) on the classes,
        a zero last box layer with bias (0, 0, -2, -2). (A freshly constructed official model loses the heads'
        init to HF's ``post_init``, which re-draws every Linear; it survives only through ``from_pretrained``.
        The backbone keeps timm's init: its weights come from checkpoints.)"""
        for name, module in self.named_modules():
            if name.startswith("backbone"):
                continue
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
                nn.init.normal_(module.weight, std=self.config.init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, MultiscaleDeformableAttention):
                module.reset_parameters()
        nn.init.xavier_uniform_(self.reference_points.weight)
        nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)
        nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))
        last = self.bbox_embed.layers[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([0.0, 0.0, -2.0, -2.0]))

    @staticmethod
    def slow_parameter(name: str) -> bool:
        """Trained at the backbone's learning rate (the reference's ``configure_optimizers``): every parameter
        whose name contains backbone, reference_points or sampling_offsets."""
        return any(part in name for part in SLOW_PARAMETERS)

    def forward(self, images: Sequence[Tensor]) -> dict:
        """Images [3, H_i, W_i] (RGB, 0-255) -> ``pred_logits`` [B, N, num_classes], ``pred_boxes`` [B, N, 4]
        (cx, cy, w, h normalised to each image), ``aux_outputs`` (the earlier decoder layers' two outputs),
        ``last_hidden_state`` [B, N, C], and the decoder self-attention's ``decoder_queries`` (multiplied by
        head_dim ** -0.5, as used) and ``decoder_keys``, each [L_dec, B, N, C] with heads concatenated."""
        src, pos, padding, shapes, ratios = self.encoder_inputs(images)
        memory = self.encoder(src, pos, shapes, ratios, padding)
        query_pos, tgt = self.query_position_embeddings.weight.split(self.config.d_model, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(src.shape[0], -1, -1)
        tgt = tgt.unsqueeze(0).expand(src.shape[0], -1, -1)
        reference = self.reference_points(query_pos).sigmoid()  # [B, N, 2]
        hs, queries, keys = self.decoder(tgt, query_pos, memory, reference, shapes, ratios, padding)
        logits, boxes = self.class_embed(hs), self.predict_boxes(hs, reference)
        layers = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits, boxes)]
        return {**layers[-1], "aux_outputs": layers[:-1], "last_hidden_state": hs[-1],
                "decoder_queries": queries, "decoder_keys": keys}

    def predict_boxes(self, hs: Tensor, reference: Tensor) -> Tensor:
        """Decoder outputs [L, B, N, C] and reference points [B, N, 2] -> boxes [L, B, N, 4]: the box head's
        output, the centre offset by inverse_sigmoid(reference), through a sigmoid."""
        delta = self.bbox_embed(hs)
        centre = delta[..., :2] + inverse_sigmoid(reference)
        return torch.cat([centre, delta[..., 2:]], -1).sigmoid()

    def multi_scale_features(self, images: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Images -> the projected maps [B, C, H_l, W_l] of every level and their padding masks [B, H_l, W_l]."""
        batch, sizes = self.normalizer(images)
        features = self.backbone(batch)
        maps = [features[name] for name in self.backbone.out_features]
        sources = [proj(x) for proj, x in zip(self.input_proj, maps)]
        for proj in self.input_proj[len(maps):]:
            sources.append(proj(maps[-1] if len(sources) == len(maps) else sources[-1]))
        masks = [feature_padding_mask(sizes, s.shape, batch.shape).to(s.device) for s in sources]
        return sources, masks

    def encoder_inputs(self, images: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, list, Tensor]:
        """Images -> flattened features and positions [B, S, C], padding mask [B, S], level shapes (H_l, W_l),
        valid ratios [B, L, 2]."""
        sources, masks = self.multi_scale_features(images)
        half = self.config.d_model // 2
        pos = [sine_position_embedding(~m, half).to(s.dtype).flatten(2).transpose(1, 2) + self.level_embed[level]
               for level, (s, m) in enumerate(zip(sources, masks))]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in sources], 1)
        shapes = [(int(s.shape[-2]), int(s.shape[-1])) for s in sources]
        ratios = torch.stack([valid_ratios(~m) for m in masks], 1)
        return src, torch.cat(pos, 1), torch.cat([m.flatten(1) for m in masks], 1), shapes, ratios


def build_deformable_detr(config: DeformableDetrConfig | None = None) -> DeformableDETR:
    """EGTR's detector with a fresh timm backbone (weights come from checkpoints)."""
    return DeformableDETR(None, config)
