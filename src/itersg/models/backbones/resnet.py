"""ResNet in the detectron2 / MSRA layout, the backbone of the R-101 IterativeSG model.

Differences from torchvision's ResNet, all as in detectron2 (``modeling/backbone/resnet.py``) with
``STRIDE_IN_1X1: False``: the stride of a bottleneck is in its 3x3 conv, every conv is bias-free and
followed by a batch norm stored as ``<conv>.norm``, the stages are named ``res2``..``res5`` and a
projection shortcut exists only where the channel count changes. The module names match detectron2's,
so detectron2 state dicts load under a prefix change.

The norm is detectron2's ``MODEL.RESNETS.NORM``: ``FrozenBN`` (statistics and affine terms fixed, for
ImageNet-initialised weights) or ``BN`` (trained, per-process batch statistics, for networks trained
from scratch such as the small demo configuration).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from itersg.models.config import ResNetConfig

STAGE_NAMES = ("res2", "res3", "res4", "res5")
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {"FrozenBN": FrozenBatchNorm2d, "BN": nn.BatchNorm2d}


class ConvNorm(nn.Conv2d):
    """A bias-free conv followed by a batch norm kept as the ``norm`` child (detectron2 layout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, norm: str = "FrozenBN"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False)
        self.norm = NORM_LAYERS[norm](out_channels)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")  # c2_msra_fill

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(super().forward(x))


class Stem(nn.Module):
    """7x7/2 conv + norm + ReLU + 3x3/2 max pool: stride 4."""

    def __init__(self, out_channels: int, norm: str = "FrozenBN"):
        super().__init__()
        self.conv1 = ConvNorm(3, out_channels, kernel_size=7, stride=2, padding=3, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided or dilated) -> 1x1 with a residual connection."""

    def __init__(self, in_channels: int, bottleneck_channels: int, out_channels: int, stride: int,
                 dilation: int = 1, norm: str = "FrozenBN"):
        super().__init__()
        self.shortcut = (ConvNorm(in_channels, out_channels, 1, stride=stride, norm=norm)
                         if in_channels != out_channels else None)
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, norm=norm)
        self.conv2 = ConvNorm(bottleneck_channels, bottleneck_channels, 3, stride=stride, padding=dilation,
                              dilation=dilation, norm=norm)
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet returning the four stage outputs; the transformer reads ``res5``.

    Backbone interface (shared with the VoVNet-FPN backbones): ``forward(x)`` takes normalised
    images [B, 3, H, W] and returns ``{"res2": [B, 4w, H/4, W/4], ..., "res5": [B, 32w, H/32, W/32]}``
    (w = ``config.width``; sizes rounded up; res5 at H/16 or H/8 with ``replace_stride_with_dilation``);
    ``out_feature``, ``out_channels``, ``out_stride``,
    ``size_divisibility``, ``pixel_mean``/``pixel_std`` (0-255 scale) and ``input_format`` describe it.
    """

    out_feature = "res5"

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.stem = Stem(config.width, config.norm)
        in_channels, self.out_stride, dilation = config.width, 4, 1
        for index, (name, num_blocks) in enumerate(zip(STAGE_NAMES, config.blocks)):
            bottleneck, out_channels = config.width * 2**index, config.width * 4 * 2**index
            # res3..res5 halve the resolution, or keep it and dilate (torchvision's replace_stride_with_dilation)
            dilate = index > 0 and config.replace_stride_with_dilation[index - 1]
            downsample = 2 if index > 0 and not dilate else 1
            dilation *= 2 if dilate else 1
            self.out_stride *= downsample
            blocks = []
            for block in range(num_blocks):
                blocks.append(Bottleneck(in_channels, bottleneck, out_channels, downsample if block == 0 else 1,
                                         dilation, config.norm))
                in_channels = out_channels
            self.add_module(name, nn.Sequential(*blocks))
        self.out_channels = in_channels
        self.size_divisibility = config.size_divisibility
        self.pixel_mean = list(config.pixel_mean)
        self.pixel_std = list(config.pixel_std)
        self.input_format = config.input_format
        self.freeze(config.freeze_at)

    def freeze(self, freeze_at: int) -> None:
        """Stop gradients into the stem (``freeze_at >= 1``) and the first ``freeze_at - 1`` stages."""
        frozen = [self.stem, *(getattr(self, name) for name in STAGE_NAMES)][:freeze_at]
        for module in frozen:
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = {}
        x = self.stem(x)
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            features[name] = x
        return features


def build_resnet(config: ResNetConfig | None = None) -> ResNet:
    """The ResNet backbone; the default is the R-101 of IterativeSG (42,394,816 parameters)."""
    return ResNet(config or ResNetConfig())
