"""DETR's post-norm transformer: encoder and decoder layers, and the plain DETR encoder-decoder.

Tensors are batch-first: sequences are [B, L, C]. Parameter names follow DETR (``self_attn``,
``multihead_attn``, ``linear1``/``linear2``, ``norm1``..``norm3``) so reference checkpoints load by
prefix renaming only. IterativeSG reuses the layers in ``relation/iterative_decoder.py``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from itersg.models.config import TransformerConfig


def with_pos(tensor: Tensor, pos: Tensor | None) -> Tensor:
    return tensor if pos is None else tensor + pos


def clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def xavier_init_(module: nn.Module) -> None:
    """DETR's transformer initialisation: Xavier-uniform for every parameter with more than one dim."""
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


class TransformerEncoderLayer(nn.Module):
    """Self-attention + FFN, each followed by residual and LayerNorm (post-norm)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor) -> Tensor:
        """src, pos: [B, HW, C]; key_padding_mask: [B, HW] (True = padding)."""
        q = k = with_pos(src, pos)
        attended = self.self_attn(q, k, src, key_padding_mask=key_padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class TransformerDecoderLayer(nn.Module):
    """Self-attention over the queries, cross-attention to the image, FFN (post-norm)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, query_pos: Tensor, pos: Tensor,
                memory_key_padding_mask: Tensor) -> Tensor:
        """tgt, query_pos: [B, Q, C]; memory, pos: [B, HW, C]; mask: [B, HW]. Returns [B, Q, C]."""
        q = k = with_pos(tgt, query_pos)
        attended = self.self_attn(q, k, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(attended))
        attended = self.multihead_attn(with_pos(tgt, query_pos), with_pos(memory, pos), memory,
                                       key_padding_mask=memory_key_padding_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, layer: TransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = clones(layer, num_layers)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor) -> Tensor:
        for layer in self.layers:
            src = layer(src, pos, key_padding_mask)
        return src


class TransformerDecoder(nn.Module):
    """DETR decoder returning every layer's output after the shared final LayerNorm."""

    def __init__(self, layer: TransformerDecoderLayer, num_layers: int, d_model: int):
        super().__init__()
        self.layers = clones(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, memory: Tensor, query_pos: Tensor, pos: Tensor,
                memory_key_padding_mask: Tensor) -> Tensor:
        """Returns the normalised output of every layer, [num_layers, B, Q, C]."""
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, query_pos, pos, memory_key_padding_mask)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


def flatten_image(src: Tensor, mask: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[B, C, H, W] features/positions and a [B, H, W] mask -> [B, HW, C], [B, HW], [B, HW, C]."""
    return src.flatten(2).transpose(1, 2), mask.flatten(1), pos.flatten(2).transpose(1, 2)


class Transformer(nn.Module):
    """DETR encoder-decoder: ``forward`` returns the decoder outputs [L, B, Q, C] of all layers."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        d, ff = config.hidden_dim, config.dim_feedforward
        self.d_model = d
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d, config.nheads, ff, config.dropout), config.enc_layers)
        self.decoder = TransformerDecoder(
            TransformerDecoderLayer(d, config.nheads, ff, config.dropout), config.dec_layers, d)
        xavier_init_(self)

    def forward(self, src: Tensor, mask: Tensor, pos: Tensor, query_embed: Tensor) -> Tensor:
        """src, pos: [B, C, H, W]; mask: [B, H, W]; query_embed: [Q, C]."""
        src, mask, pos = flatten_image(src, mask, pos)
        memory = self.encoder(src, pos, mask)
        query_pos = query_embed.unsqueeze(0).expand(src.shape[0], -1, -1)
        tgt = query_pos.new_zeros(query_pos.shape)
        return self.decoder(tgt, memory, query_pos, pos, mask)
