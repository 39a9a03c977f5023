"""timm ResNet-50 returning C3-C5, the backbone of EGTR's Deformable DETR (HF ``DeformableDetrTimmConvEncoder``).

As the official code builds it: ``timm.create_model("resnet50", features_only=True, out_indices=(2, 3, 4))``
(module names ``conv1``, ``bn1``, ``layer1``..``layer4``, so official state dicts load under a prefix change),
stem and ``layer1`` frozen (only parameters named ``layer2``..``layer4`` train), batch norms frozen. Here
``pretrained=False`` always: nothing is downloaded, the weights come from checkpoints.

Which batch norms are frozen: the official ``replace_batch_norm`` walks ``dir(module)``, and ``nn.Module.__dir__``
drops names that start with a digit, so the norm of each projection shortcut (``layerN.0.downsample.1``) is
never replaced and stays a trainable ``nn.BatchNorm2d`` (batch statistics in train mode). The default keeps that
(it is what the official parameter count, 23,462,592 with 23,239,680 trainable, measures);
``freeze_downsample_norm=True`` freezes those four too.

Normalisation: EGTR's ``DeformableDetrFeatureExtractor`` (HF ``DetrFeatureExtractor``, SenseTime/deformable-detr
settings) rescales RGB images to 0-1 and normalises with the ImageNet mean (0.485, 0.456, 0.406) and std
(0.229, 0.224, 0.225); on this project's RGB 0-255 input that is mean (123.675, 116.28, 103.53) and std
(58.395, 57.12, 57.375), RGB order. ``pad_and_create_pixel_mask`` pads each batch bottom/right to its largest
height and width only (``size_divisibility`` 0).

Imports timm and torch / torchvision only, within ``itersg.models.backbones``' allowance.
"""

from __future__ import annotations

import timm
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
TRAINABLE_STAGES = ("layer2", "layer3", "layer4")
# The official DeformableDetrFrozenBatchNorm2d adds eps = 1e-5 to the running variance; torchvision's
# FrozenBatchNorm2d uses the same 1e-5 by default, set explicitly here.
FROZEN_BN_EPS = 1e-5


def freeze_batch_norms(module: nn.Module, include_digit_names: bool = False) -> None:
    """Replace the ``nn.BatchNorm2d`` children of ``module`` (recursively) by ``FrozenBatchNorm2d`` holding the
    same statistics; children whose name starts with a digit are kept unless ``include_digit_names``."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            if include_digit_names or not name[0].isdigit():
                setattr(module, name, _frozen_copy(child))
        else:
            freeze_batch_norms(child, include_digit_names)


def _frozen_copy(norm: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(norm.num_features, eps=FROZEN_BN_EPS)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(frozen, name).copy_(getattr(norm, name).detach())
    return frozen


class TimmResNet(nn.Module):
    """ResNet from timm returning the last three stages.

    Backbone interface: ``forward(x)`` takes normalised images [B, 3, H, W] and returns
    ``{"layer2": [B, 512, H/8, W/8], "layer3": [B, 1024, H/16, W/16], "layer4": [B, 2048, H/32, W/32]}``
    (sizes rounded up; ResNet-50 channels); ``out_features``, ``feature_channels`` and ``feature_strides`` list
    them in that order; ``out_feature``/``out_channels``/``out_stride`` describe the last one (the single-level
    interface of ``ResNet``); ``pixel_mean``/``pixel_std`` (0-255 scale), ``input_format`` and
    ``size_divisibility`` tell ``ImageNormalizer`` how to batch images.

    Args:
        name: the timm model name.
        out_indices: timm feature indices (2, 3, 4 = C3, C4, C5).
        freeze_downsample_norm: also freeze the shortcut norms the official code leaves trainable.
        widths: the stage widths (timm's ``channels``; the stem is as wide as the first stage), for the
            small configurations of the demo and the tests; None = the model's own.
    """

    def __init__(self, name: str = "resnet50", out_indices: tuple[int, ...] = (2, 3, 4),
                 freeze_downsample_norm: bool = False, widths: tuple[int, ...] | None = None):
        super().__init__()
        self.pixel_mean, self.pixel_std = list(IMAGENET_MEAN_255), list(IMAGENET_STD_255)
        self.input_format, self.size_divisibility = "RGB", 0
        sizes = {"channels": tuple(widths), "stem_width": widths[0]} if widths else {}
        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices, **sizes)
        freeze_batch_norms(self.body, include_digit_names=freeze_downsample_norm)
        info = self.body.feature_info
        self.out_features = tuple(info.module_name())
        self.feature_channels = tuple(info.channels())
        self.feature_strides = tuple(info.reduction())
        self.out_feature, self.out_channels, self.out_stride = (
            self.out_features[-1], self.feature_channels[-1], self.feature_strides[-1])
        for parameter_name, parameter in self.body.named_parameters():
            if not any(stage in parameter_name for stage in TRAINABLE_STAGES):
                parameter.requires_grad_(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.out_features, self.body(x)))


def build_timm_resnet(name: str = "resnet50", freeze_downsample_norm: bool = False) -> TimmResNet:
    """EGTR's backbone: timm ResNet-50 C3-C5, 23,462,592 parameters (23,239,680 trainable) by default."""
    return TimmResNet(name, freeze_downsample_norm=freeze_downsample_norm)
