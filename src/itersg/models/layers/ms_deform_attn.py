"""Multi-scale deformable attention of Deformable DETR (Zhu et al. 2021), as EGTR's vendored HF code has it.

The sampling is ``torch.nn.functional.grid_sample`` (bilinear, zero padding, ``align_corners=False``): the
official code's own fallback (``ms_deform_attn_core_pytorch``), so it runs on CPU and CUDA and is, on CPU,
numerically the reference. Compiled kernels on PyPI were looked at (2026) and not taken: ``ms-deform-attn``
1.0.1 is one prebuilt cp311 Linux wheel whose CUDA extension is bound to the torch build it was compiled
against while its metadata accepts any torch; ``torch-ms-deform-attn`` 0.1.1 is an sdist compiled at install
(C++ compiler, CUDA toolkit for GPU). Either would add a native build to CPU-only CI for a GPU speed-up only.

Conventions: a level's map is flattened row-major (``H*W``) and levels are concatenated in order; sampling
locations are (x, y) in [0, 1] of each level's map, with pixel ``(i, j)``'s centre at ((j + 0.5) / W,
(i + 0.5) / H); samples outside the map read zeros.

Imports torch only, as ``itersg.models.layers`` allows (torch / torchvision only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _shape_list(spatial_shapes: Sequence[tuple[int, int]] | Tensor) -> list[tuple[int, int]]:
    rows = spatial_shapes.tolist() if isinstance(spatial_shapes, Tensor) else spatial_shapes
    return [(int(h), int(w)) for h, w in rows]


def ms_deform_attn_core(value: Tensor, spatial_shapes: Sequence[tuple[int, int]] | Tensor,
                        sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """The attention-weighted sum of bilinear samples of every level.

    Args:
        value: [B, S, M, D], S = sum of H_l * W_l over the levels, M heads of D channels.
        spatial_shapes: (H_l, W_l) of each of the L levels (a list, or a [L, 2] integer tensor).
        sampling_locations: [B, Q, M, L, P, 2], (x, y) in [0, 1] of level l's map.
        attention_weights: [B, Q, M, L, P].

    Returns:
        [B, Q, M * D], heads concatenated.
    """
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    shapes = _shape_list(spatial_shapes)
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1]
    sampled = []
    for level, (h, w) in enumerate(shapes):
        level_value = values[level].flatten(2).transpose(1, 2).reshape(batch * heads, dim, h, w)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [B*M, Q, P, 2]
        sampled.append(F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # [B*M, D, Q, P]
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # [B*M, D, Q]
    return output.view(batch, heads * dim, queries).transpose(1, 2).contiguous()


class MultiscaleDeformableAttention(nn.Module):
    """Each query attends to ``n_points`` learned offsets around its reference point on every level.

    Parameter names follow the official module (``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj``), so checkpoints load under a prefix change.

    Args:
        embed_dim: channels C of queries and values; divisible by ``num_heads``.
        num_heads: M.
        n_levels: L, the number of feature levels.
        n_points: P, sampling points per head and level.
    """

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, n_levels: int = 4, n_points: int = 4):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.n_levels, self.n_points = embed_dim, num_heads, n_levels, n_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * n_levels * n_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: offsets start on M evenly spaced directions (on the unit square's
        border), k pixels away for point k = 1..P, on every level; uniform attention; Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True)[0]  # [M, 2]
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        grid = directions.view(self.num_heads, 1, 1, 2) * steps  # [M, 1, P, 2]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.expand(-1, self.n_levels, -1, -1).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, reference_points: Tensor,
                spatial_shapes: Sequence[tuple[int, int]], position_embeddings: Tensor | None = None,
                padding_mask: Tensor | None = None) -> Tensor:
        """Attend from queries to the flattened multi-scale maps.

        Args:
            hidden_states: queries [B, Q, C]; ``position_embeddings`` [B, Q, C] is added to them.
            encoder_hidden_states: values [B, S, C], the L levels flattened and concatenated.
            reference_points: [B, Q, L, 2] points (x, y) in [0, 1], offsets measured in pixels of each level,
                or [B, Q, L, 4] boxes (cx, cy, w, h), offsets as fractions of half the box per point.
            spatial_shapes: (H_l, W_l) of each level.
            padding_mask: [B, S], True where the value is padding (those values are zeroed).

        Returns:
            [B, Q, C].
        """
        if position_embeddings is not None:
            hidden_states = hidden_states + position_embeddings
        batch, queries, _ = hidden_states.shape
        shapes = _shape_list(spatial_shapes)
        value = self.value_proj(encoder_hidden_states)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(batch, value.shape[1], self.num_heads, self.embed_dim // self.num_heads)
        heads, levels, points = self.num_heads, self.n_levels, self.n_points
        offsets = self.sampling_offsets(hidden_states).view(batch, queries, heads, levels, points, 2)
        weights = self.attention_weights(hidden_states).view(batch, queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, queries, heads, levels, points)
        locations = self.sampling_locations(reference_points, offsets, shapes)
        return self.output_proj(ms_deform_attn_core(value, shapes, locations, weights))

    def sampling_locations(self, reference_points: Tensor, offsets: Tensor,
                           shapes: Sequence[tuple[int, int]]) -> Tensor:
        """Reference points [B, Q, L, 2 or 4] and offsets [B, Q, M, L, P, 2] -> locations [B, Q, M, L, P, 2]."""
        if reference_points.shape[-1] == 2:
            size = torch.tensor([[w, h] for h, w in shapes], dtype=offsets.dtype, device=offsets.device)
            return reference_points[:, :, None, :, None, :] + offsets / size[None, None, None, :, None, :]
        if reference_points.shape[-1] == 4:
            centre, extent = reference_points[:, :, None, :, None, :2], reference_points[:, :, None, :, None, 2:]
            return centre + offsets / self.n_points * extent * 0.5
        raise ValueError(f"reference points must end in 2 or 4 values, got {reference_points.shape[-1]}")
