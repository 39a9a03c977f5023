"""The three interacting decoders of IterativeSG (subject, object, relation/predicate).

At every layer (``IterativeRelationDecoder`` in the reference ``modeling/transformer/transformer.py``):

1. the subject decoder layer runs with the subject query embedding as query position;
2. the object query position is the object embedding plus a projection of its attention to the
   subject features (``object_query_attn`` / ``object_query_proj``), and the object layer runs with it;
3. the relation query position likewise attends to [subject, object] features (keys/values of width
   2C), and the relation layer runs with it;
4. between layers, each decoder's next input is its output plus LayerNorm(projection(attention from
   its own output to the concatenated [subject, object, relation] triplet features, width 3C)).

Every ``*_proj`` linear layer starts at zero, so before training each decoder computes exactly a
plain DETR decoder (decoder replication relies on this). Intermediate outputs go through
``entity_norm`` (subjects and objects share it) and ``relation_norm``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from itersg.models.config import TransformerConfig
from itersg.models.detectors.transformer import (
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    clones,
    flatten_image,
    with_pos,
    xavier_init_,
)

BRANCHES = ("subject", "object", "relation")


def _attentions(d: int, nhead: int, dropout: float, kdim: int, n: int) -> nn.ModuleList:
    return nn.ModuleList(
        nn.MultiheadAttention(d, nhead, dropout=dropout, kdim=kdim, vdim=kdim, batch_first=True)
        for _ in range(n))


def _linears(d: int, n: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(d, d) for _ in range(n))


def _repeat(x: Tensor, m: int) -> Tensor:
    """[B, Q, C] -> [B, m * Q, C], each query m times in a row (x itself when m is 1)."""
    return x if m == 1 else x.repeat_interleave(m, dim=1)


class IterativeDecoder(nn.Module):
    """Subject, object and relation decoders conditioned on one another (see the module docstring)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        d, h, p, n = config.hidden_dim, config.nheads, config.dropout, config.dec_layers
        layer = TransformerDecoderLayer(d, h, config.dim_feedforward, p)
        self.num_layers = n
        self.subject_layers = clones(layer, n)
        self.object_layers = clones(layer, n)
        self.relation_layers = clones(layer, n)
        self.entity_norm = nn.LayerNorm(d)
        self.relation_norm = nn.LayerNorm(d)
        # Query conditioning within a layer: object <- subject, relation <- (subject, object).
        self.object_query_attn = _attentions(d, h, p, d, n)
        self.object_query_proj = _linears(d, n)
        self.relation_query_attn = _attentions(d, h, p, 2 * d, n)
        self.relation_query_proj = _linears(d, n)
        # Between layers: every branch attends to the concatenated triplet features.
        for branch in BRANCHES:
            self.add_module(f"{branch}_graph_attn", _attentions(d, h, p, 3 * d, n - 1))
            self.add_module(f"{branch}_graph_proj", _linears(d, n - 1))
            self.add_module(f"{branch}_graph_norm", nn.ModuleList(nn.LayerNorm(d) for _ in range(n - 1)))
        self.dropout = nn.Dropout(p)

    def zero_conditioning_(self) -> None:
        """Zero every conditioning projection, making each decoder a plain DETR decoder."""
        projections = [self.object_query_proj, self.relation_query_proj,
                       *(getattr(self, f"{b}_graph_proj") for b in BRANCHES)]
        for linears in projections:
            for linear in linears:
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)

    def _condition(self, attn: nn.MultiheadAttention, proj: nn.Linear, query: Tensor, key: Tensor,
                   value: Tensor) -> Tensor:
        return self.dropout(proj(attn(query, key, value, need_weights=False)[0]))

    def forward(self, memory: Tensor, pos: Tensor, memory_mask: Tensor, subject_pos: Tensor,
                object_pos: Tensor, relation_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Decode the three query sets.

        Args:
            memory, pos: encoder output and its positions, [B, HW, C]; memory_mask: [B, HW].
            subject_pos, object_pos: query embeddings, [B, Q, C]; relation_pos: [B, m * Q, C] (m = 1
                but for SpeaQ, where subject and object query i serve relation queries m*i .. m*i+m-1).

        Returns:
            subject, object and relation features of every layer, [num_layers, B, Q (m * Q), C].
        """
        out_sub = torch.zeros_like(subject_pos)
        out_obj, out_rel = torch.zeros_like(object_pos), torch.zeros_like(relation_pos)
        hs_sub, hs_obj, hs_rel = [], [], []
        for i in range(self.num_layers):
            sub = self.subject_layers[i](out_sub, memory, subject_pos, pos, memory_mask)
            obj_pos = object_pos + self._condition(
                self.object_query_attn[i], self.object_query_proj[i], object_pos,
                with_pos(sub, subject_pos), sub)
            obj = self.object_layers[i](out_obj, memory, obj_pos, pos, memory_mask)
            pair_keys = torch.cat([with_pos(sub, subject_pos), with_pos(obj, obj_pos)], -1)  # [B, Q, 2C]
            rel_pos = relation_pos + self._condition(
                self.relation_query_attn[i], self.relation_query_proj[i], relation_pos,
                pair_keys, torch.cat([sub, obj], -1))
            rel = self.relation_layers[i](out_rel, memory, rel_pos, pos, memory_mask)
            hs_sub.append(self.entity_norm(sub))
            hs_obj.append(self.entity_norm(obj))
            hs_rel.append(self.relation_norm(rel))
            if i < self.num_layers - 1:
                features, positions = (sub, obj, rel), (subject_pos, obj_pos, rel_pos)
                out_sub, out_obj, out_rel = self._exchange(i, features, positions)
        return torch.stack(hs_sub), torch.stack(hs_obj), torch.stack(hs_rel)

    def _exchange(self, i: int, features: tuple[Tensor, Tensor, Tensor],
                  positions: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, ...]:
        """Inputs of layer ``i + 1``: each branch's output plus its view of the whole triplet.

        With m relation queries per subject/object query (SpeaQ), each triplet repeats its subject and
        object m times (the official ``repeat_interleave``).
        """
        m = features[2].shape[1] // features[0].shape[1]
        triplet = torch.cat([*(_repeat(f, m) for f in features[:2]), features[2]], -1)  # [B, Q_r, 3C]
        triplet_keys = with_pos(triplet, torch.cat([*(_repeat(p, m) for p in positions[:2]), positions[2]], -1))
        outputs = []
        for branch, feature, position in zip(BRANCHES, features, positions):
            residual = self._condition(getattr(self, f"{branch}_graph_attn")[i],
                                       getattr(self, f"{branch}_graph_proj")[i],
                                       with_pos(feature, position), triplet_keys, triplet)
            outputs.append(feature + getattr(self, f"{branch}_graph_norm")[i](residual))
        return tuple(outputs)


class IterativeTransformer(nn.Module):
    """DETR encoder + the three interacting decoders."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        d = config.hidden_dim
        self.d_model = d
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d, config.nheads, config.dim_feedforward, config.dropout),
            config.enc_layers)
        self.decoder = IterativeDecoder(config)
        xavier_init_(self)
        self.decoder.zero_conditioning_()

    def forward(self, src: Tensor, mask: Tensor, pos: Tensor, subject_embed: Tensor, object_embed: Tensor,
                relation_embed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """src, pos: [B, C, H, W]; mask: [B, H, W]; embeddings: [Q, C]. Returns 3 x [L, B, Q, C]."""
        src, mask, pos = flatten_image(src, mask, pos)
        memory = self.encoder(src, pos, mask)
        embeds = (subject_embed, object_embed, relation_embed)
        queries = [e.unsqueeze(0).expand(src.shape[0], -1, -1) for e in embeds]
        return self.decoder(memory, pos, mask, *queries)
