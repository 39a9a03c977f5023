"""CenterMask's RoI mask heads: the spatial-attention-guided (SAG) mask head and the MaskIoU head.

Same layers, sizes and initialisation as centermask2's ``SpatialAttentionMaskHead`` and ``MaskIoUHead``
with the VoVNet configs (4 convs of 256, 14x14 RoI features, 28x28 masks, 1024-wide fully connected
layers): 2,643,298 and 16,340,304 parameters for 80 mask classes. Visual Genome has no masks, so in
this project these heads carry no loss and are not run by ``CenterMaskHeads.forward``; they exist so
that the model is the one whose parameters the ETRI table counts, and so that centermask2 checkpoints
load completely. Their ``forward`` methods work on RoI features for anyone who has masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def msra_fill(module: nn.Conv2d | nn.ConvTranspose2d) -> None:
    """detectron2's ``c2_msra_fill``: He normal (fan_out) weights, zero bias."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class SpatialAttention(nn.Module):
    """Gate each position by sigmoid(conv3x3([channel mean, channel max]))."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=3, padding=1, bias=False)
        msra_fill(self.conv)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class SAGMaskHead(nn.Module):
    """RoI features [R, C, S, S] -> per-class mask logits [R, num_classes, 2S, 2S]."""

    def __init__(self, in_channels: int, num_classes: int, num_convs: int = 4, conv_dim: int = 256):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if k == 0 else conv_dim, conv_dim, kernel_size=3, padding=1)
            for k in range(num_convs))
        self.spatial_attention = SpatialAttention()
        self.deconv = nn.ConvTranspose2d(conv_dim if num_convs else in_channels, conv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes, kernel_size=1)
        for layer in (*self.convs, self.deconv):
            msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.relu(self.deconv(self.spatial_attention(x)))
        return self.predictor(x)


class MaskIoUHead(nn.Module):
    """RoI features [R, C, S, S] and mask probabilities [R, 1, 2S, 2S] -> predicted mask IoU per class [R, K].

    The mask is max-pooled to S x S and concatenated to the features; the last conv halves the
    resolution, so the first fully connected layer sees ``conv_dim * (S // 2) ** 2`` values.
    """

    def __init__(self, in_channels: int, num_classes: int, num_convs: int = 4, conv_dim: int = 256,
                 fc_dim: int = 1024, resolution: int = 14):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels + 1 if k == 0 else conv_dim, conv_dim, kernel_size=3,
                      stride=2 if k == num_convs - 1 else 1, padding=1)
            for k in range(num_convs))
        self.fc1 = nn.Linear(conv_dim * (resolution // 2) ** 2, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.predictor = nn.Linear(fc_dim, num_classes)
        for layer in (*self.convs, self.fc1, self.fc2):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features: Tensor, mask_probs: Tensor) -> Tensor:
        x = torch.cat([features, F.max_pool2d(mask_probs, kernel_size=2, stride=2)], dim=1)
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.predictor(F.relu(self.fc2(x)))
