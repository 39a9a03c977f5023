"""Feature pyramid as in FCOS / CenterMask: P3-P5 from three backbone stages, P6 and P7 from P5.

Layout of centermask2's ``build_fcos_vovnet_fpn_backbone`` (detectron2 ``FPN`` with ``norm=""`` and
the ``LastLevelP6P7`` top block fed by ``"p5"``): a 1x1 lateral conv and a 3x3 output conv per input
stage, top-down nearest-neighbour upsampling with a sum, then ``P6 = conv3x3/2(P5)`` and
``P7 = conv3x3/2(relu(P6))``. All convs have biases and no normalisation. With 256 channels on
VoVNet stages of 512/768/1024 channels this is 3,540,992 parameters (1,180,160 of them in P6/P7).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = ("P3", "P4", "P5", "P6", "P7")
LEVEL_STRIDES = {"P3": 8, "P4": 16, "P5": 32, "P6": 64, "P7": 128}


def xavier_fill(conv: nn.Conv2d) -> None:
    """detectron2's ``c2_xavier_fill``: Caffe2 XavierFill (uniform, a=1) and a zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)


class TopBlockP6P7(nn.Module):
    """Two extra stride-2 levels computed from the P5 output (not from C5, as RetinaNet does)."""

    def __init__(self, channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
        for conv in (self.p6, self.p7):
            xavier_fill(conv)

    def forward(self, p5: Tensor) -> tuple[Tensor, Tensor]:
        """P5 [B, C, h, w] -> P6 [B, C, ceil(h/2), ceil(w/2)], P7 [B, C, ceil(h/4), ceil(w/4)]."""
        p6 = self.p6(p5)
        return p6, self.p7(F.relu(p6))


class FPN(nn.Module):
    """Top-down pyramid over the stride 8/16/32 backbone features, plus P6/P7.

    Args:
        in_channels: channels of the stride 8, 16 and 32 inputs (C3, C4, C5).
        out_channels: channels of every pyramid level.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256):
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"FPN expects the C3, C4, C5 channel counts, got {list(in_channels)}")
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, kernel_size=1) for c in in_channels)
        self.output_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1) for _ in in_channels)
        for conv in (*self.lateral_convs, *self.output_convs):
            xavier_fill(conv)
        self.top_block = TopBlockP6P7(out_channels)
        self.out_channels = out_channels

    def forward(self, features: Sequence[Tensor]) -> dict[str, Tensor]:
        """C3, C4, C5 [B, C_i, H/s, W/s] (s = 8, 16, 32) -> {"P3": [B, C, H/8, W/8], ..., "P7": [.., H/128]}.

        Sizes are rounded up at every stride-2 step; when H and W are multiples of 32 every level is
        exactly H/s x W/s for P3-P5.
        """
        inner = self.lateral_convs[-1](features[-1])
        outputs = [self.output_convs[-1](inner)]
        for index in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[index](features[index])
            # size= rather than scale_factor=2: identical for aligned inputs, robust for odd sizes
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output_convs[index](inner))
        outputs.extend(self.top_block(outputs[-1]))
        return dict(zip(LEVELS, outputs))
