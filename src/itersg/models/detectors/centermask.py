"""The CenterMask heads of the ETRI "VoVNetV2-FPN CenterMask" variants (rows E-G).

centermask2's ``CenterMask`` = FCOS proposal head on P3-P7 (``fcos.py``) + SAG-Mask head + MaskIoU head
(``mask_heads.py``) on RoIs pooled from P3-P5. Measured against the ETRI "T.P." column: FCOS with 150
classes 5,082,016, SAG-Mask 2,643,298 and MaskIoU 16,340,304 parameters (80 mask classes, centermask2's
COCO default, which the ETRI runs kept): +24,065,618 in all.

In this project the FCOS head trains on the Visual Genome boxes as an auxiliary detector beside the
scene-graph transformer (``loss``). Visual Genome has no masks: the mask heads have nothing to learn
from, so ``forward`` does not run them (their outputs would feed no loss, and RoI pooling of FCOS
proposals would only cost time); their parameters are frozen (``requires_grad=False``) so that
optimisers and DistributedDataParallel do not see parameters without gradients. They are kept so
that the model is the one the parameter column counts and so that centermask2 checkpoints load.

``overrides`` (params.yaml ``model.overrides.aux_head``) give small heads of the same classes:
``num_convs`` (4, convs per FCOS tower), ``mask_num_convs`` (4), ``mask_conv_dim`` (256),
``maskiou_num_convs`` (4), ``maskiou_conv_dim`` (256), ``maskiou_fc_dim`` (1024), ``mask_resolution``
(14, RoI size), ``small`` (false: start from ``SMALL_OVERRIDES``; keys beside it still apply).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from itersg.errors import UserError
from itersg.models.backbones.fpn import LEVEL_STRIDES, LEVELS
from itersg.models.detectors.fcos import FCOSHead, fcos_losses, level_locations
from itersg.models.detectors.mask_heads import MaskIoUHead, SAGMaskHead

DEFAULT_OPTIONS = {"num_convs": 4, "mask_num_convs": 4, "mask_conv_dim": 256, "maskiou_num_convs": 4,
                   "maskiou_conv_dim": 256, "maskiou_fc_dim": 1024, "mask_resolution": 14}
SMALL_OVERRIDES = {"num_convs": 1, "mask_num_convs": 1, "mask_conv_dim": 16, "maskiou_num_convs": 1,
                   "maskiou_conv_dim": 16, "maskiou_fc_dim": 32, "mask_resolution": 14}
OVERRIDE_KEYS = (*DEFAULT_OPTIONS, "small")


class CenterMaskHeads(nn.Module):
    """FCOS head (trained) + SAG-Mask and MaskIoU heads (inert, see the module docstring)."""

    def __init__(self, in_channels: int, num_classes: int, mask_classes: int, options: Mapping[str, int]):
        super().__init__()
        self.num_classes = num_classes
        self.levels = LEVELS
        self.fcos = FCOSHead(in_channels, num_classes, options["num_convs"], num_levels=len(LEVELS))
        self.mask_head = SAGMaskHead(in_channels, mask_classes, options["mask_num_convs"],
                                     options["mask_conv_dim"])
        self.maskiou_head = MaskIoUHead(in_channels, mask_classes, options["maskiou_num_convs"],
                                        options["maskiou_conv_dim"], options["maskiou_fc_dim"],
                                        options["mask_resolution"])
        for head in (self.mask_head, self.maskiou_head):
            head.requires_grad_(False)

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, list[Tensor] | list[int]]:
        """Pyramid {"P3": [B, C, H/8, W/8], ..., "P7": ...} -> FCOS predictions per level.

        Returns a dict of lists (one entry per level P3..P7): ``logits`` [B, K, h, w] (sigmoid class
        logits), ``ltrb`` [B, 4, h, w] (distances to the box sides in strides, >= 0), ``centerness``
        [B, 1, h, w] (logits), ``locations`` [h * w, 2] ((x, y) pixels of the cells) and ``strides``.
        """
        levels = [features[name] for name in self.levels]
        logits, ltrb, centerness = self.fcos(levels)
        strides = [LEVEL_STRIDES[name] for name in self.levels]
        locations = [level_locations(x.shape[-2], x.shape[-1], s, x.device) for x, s in zip(levels, strides)]
        return {"logits": logits, "ltrb": ltrb, "centerness": centerness, "locations": locations,
                "strides": strides}

    def loss(self, head_outputs: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]],
             image_sizes: Sequence[tuple[int, int]]) -> dict[str, Tensor]:
        """FCOS losses ``loss_fcos_cls``, ``loss_fcos_loc``, ``loss_fcos_ctr`` on the targets' boxes.

        ``targets``: contract target dicts (``boxes`` xyxy pixels of the unpadded image, ``labels``
        0..num_classes-1); ``image_sizes`` (H, W) per image: only checked, since, as in centermask2,
        locations in the padding are ordinary negatives.
        """
        if len(targets) != len(image_sizes) or len(targets) != head_outputs["logits"][0].shape[0]:
            raise ValueError(f"{len(targets)} targets and {len(image_sizes)} image sizes for a batch of "
                             f"{head_outputs['logits'][0].shape[0]}")
        return fcos_losses(head_outputs["logits"], head_outputs["ltrb"], head_outputs["centerness"],
                           head_outputs["locations"], head_outputs["strides"], list(targets),
                           self.num_classes)


def build_centermask_heads(*, num_classes: int = 150, mask_classes: int = 80, in_channels: int = 256,
                           overrides: Mapping[str, Any] | None = None) -> CenterMaskHeads:
    """The CenterMask heads of the ETRI runs (+24,065,618 parameters at the defaults)."""
    return CenterMaskHeads(in_channels, num_classes, mask_classes, _resolve_overrides(overrides))


def _resolve_overrides(overrides: Mapping[str, Any] | None) -> dict[str, int]:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise UserError(f"model.overrides.aux_head: unknown key(s) {unknown}; allowed: {list(OVERRIDE_KEYS)}")
    options = dict(SMALL_OVERRIDES if overrides.pop("small", False) else DEFAULT_OPTIONS)
    options.update(overrides)
    for key, value in options.items():
        minimum = 2 if key == "mask_resolution" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise UserError(f"model.overrides.aux_head.{key}: expected a positive integer, got {value!r}")
    return options


# Our state-dict names -> centermask2's (module names of CenterMask's FCOS / CenterROIHeads).
_FCOS = "proposal_generator.fcos_head."
_HEAD_RULES: tuple[tuple[str, str], ...] = (
    (r"fcos\.(cls_tower|bbox_tower)\.(\d+)\.(weight|bias)", _FCOS + r"\1.\2.\3"),
    (r"fcos\.(cls_logits|bbox_pred)\.(weight|bias)", _FCOS + r"\1.\2"),
    (r"fcos\.centerness\.(weight|bias)", _FCOS + r"ctrness.\1"),
    (r"fcos\.scales\.(\d+)\.scale", _FCOS + r"scales.\1.scale"),
    (r"mask_head\.spatial_attention\.conv\.weight", "roi_heads.mask_head.spatialAtt.conv.weight"),
    (r"mask_head\.(deconv|predictor)\.(weight|bias)", r"roi_heads.mask_head.\1.\2"),
    (r"maskiou_head\.fc([12])\.(weight|bias)", r"roi_heads.maskiou_head.maskiou_fc\1.\2"),
    (r"maskiou_head\.predictor\.(weight|bias)", r"roi_heads.maskiou_head.maskiou.\1"),
)
_NUMBERED_CONVS = {"mask_head": "roi_heads.mask_head.mask_fcn",
                   "maskiou_head": "roi_heads.maskiou_head.maskiou_fcn"}


def detectron2_head_key(name: str) -> str:
    """centermask2's name of one of our ``CenterMaskHeads`` state-dict keys (KeyError if it has none)."""
    for pattern, replacement in _HEAD_RULES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    match = re.fullmatch(r"(mask_head|maskiou_head)\.convs\.(\d+)\.(weight|bias)", name)
    if match:  # convs.k -> mask_fcn{k+1} / maskiou_fcn{k+1}
        return f"{_NUMBERED_CONVS[match[1]]}{int(match[2]) + 1}.{match[3]}"
    raise KeyError(f"no centermask2 name for head parameter {name!r}")
