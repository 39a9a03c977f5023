"""VoVNetV2-39/57/99 with an FCOS-style FPN: the backbones of the ETRI VoVNet variants (rows B-G).

The network is timm's ``VovNet`` built from timm's ``ese_vovnet{39,57,99}b`` configurations, changed in
the two ways that make it centermask2's VoVNetV2 (``centermask/modeling/backbone/vovnet.py``):

* effective Squeeze-Excitation (eSE) on EVERY OSA block: timm puts it on the last block of each stage
  only, centermask2 builds it in every ``_OSA_module``;
* FrozenBatchNorm (torchvision's, i.e. BN statistics and affine terms as buffers) instead of BN.

Everything else already matches: a three-conv stride-4 stem, stage 2 without pooling, ceil-mode 3x3/2
max pooling before stages 3-5, identity shortcuts on all but the first block of a stage, hard-sigmoid
gates. Stages 3-5 (strides 8/16/32) feed the FPN of ``fpn.py``. Parameter counts of backbone + FPN:
28,704,704 (39), 44,964,288 (57), 73,010,368 (99), as the ETRI table implies.

Pixel statistics follow the weights (``overrides["pixel_stats"]``, see ``PIXEL_STATS``). The default is
the centermask2 / vovnet-detectron2 convention, because those ImageNet weights exist for all three
depths: BGR, detectron2's default mean and a std of 1 (its configs leave ``PIXEL_MEAN``/``PIXEL_STD``
at detectron2's defaults). timm's weights exist for 39 (ImageNet mean/std, RGB) and 57 (mean = std =
0.5, RGB); ``pixel_stats: timm`` picks the right pair per depth.

``overrides`` (params.yaml ``model.overrides.backbone``) builds small networks of the same classes:

* ``stem_channels`` [3], ``stage_channels`` [4] (width of the 3x3 convs in each stage),
  ``stage_out_channels`` [4] (output of each stage's 1x1 aggregation conv), ``layers_per_block``,
  ``blocks_per_stage`` [4]: timm's ``stem_chs``, ``stage_conv_chs``, ``stage_out_chs``,
  ``layer_per_block``, ``block_per_stage``;
* ``fpn_channels`` (256): channels of every pyramid level, hence ``out_channels``;
* ``freeze_at`` (0): 0 trains everything, 1 freezes the stem, ``k`` > 1 also stages 2..k. The default
  is the ETRI runs' (``MODEL.BACKBONE.FREEZE_AT: 0`` in their IterativeSG config, as centermask2's
  CenterMask-VoVNet configs): the stem trains, 112,320 more trainable parameters than with 1;
* ``pixel_stats`` ("detectron2"): a key of ``PIXEL_STATS`` or "timm";
* ``norm`` ("FrozenBN"; "BN" trains the norms with per-process batch statistics, for training from
  scratch) and ``pixel_stats`` (a ``PIXEL_STATS`` key or "timm", see below);
* ``small`` (false): start from ``SMALL_OVERRIDES`` (nothing frozen, trained norms, ImageNet-style
  input scaling);
  other keys given beside it still apply.

The loaders of ImageNet and centermask2 weights are in ``itersg.models.weights.vovnet_weights``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from timm.layers import BatchNormAct2d, create_attn
from timm.models.vovnet import VovNet, model_cfgs
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from itersg.errors import UserError
from itersg.models.backbones.fpn import FPN, LEVEL_STRIDES, LEVELS

__all__ = ["PIXEL_STATS", "SMALL_OVERRIDES", "VoVNetFPN", "build_vovnet_body", "build_vovnet_fpn"]

TIMM_VARIANTS = {39: "ese_vovnet39b", 57: "ese_vovnet57b", 99: "ese_vovnet99b"}

# (mean, std, channel order) on the 0-255 scale, per source of ImageNet weights.
PIXEL_STATS: dict[str, tuple[list[float], list[float], str]] = {
    # centermask2 / vovnet-detectron2 configs: detectron2 defaults (MODEL.PIXEL_MEAN/STD, INPUT.FORMAT)
    "detectron2": ([103.530, 116.280, 123.675], [1.0, 1.0, 1.0], "BGR"),
    # timm ese_vovnet39b.ra_in1k: IMAGENET_DEFAULT_MEAN/STD
    "timm-imagenet": ([123.675, 116.280, 103.530], [58.395, 57.120, 57.375], "RGB"),
    # timm ese_vovnet57b.ra4_e3600_r256_in1k: mean = std = 0.5
    "timm-inception": ([127.5, 127.5, 127.5], [127.5, 127.5, 127.5], "RGB"),
}
TIMM_PIXEL_STATS = {39: "timm-imagenet", 57: "timm-inception"}

SMALL_OVERRIDES: dict[str, Any] = {
    "stem_channels": [16, 16, 32],
    "stage_channels": [16, 24, 32, 40],
    "stage_out_channels": [32, 64, 96, 128],
    "layers_per_block": 2,
    "blocks_per_stage": [1, 1, 2, 2],
    "fpn_channels": 64,
    "freeze_at": 0,
    # trained from scratch: learnt norms and unit-scale inputs (identity FrozenBN on 0-255 pixels lets
    # activations reach 1e4 and stalls training)
    "norm": "BN",
    "pixel_stats": "timm-imagenet",
}
# override key -> (timm config key, list length or None for a single int)
_TIMM_KEYS = {
    "stem_channels": ("stem_chs", 3),
    "stage_channels": ("stage_conv_chs", 4),
    "stage_out_channels": ("stage_out_chs", 4),
    "layers_per_block": ("layer_per_block", None),
    "blocks_per_stage": ("block_per_stage", 4),
}
OVERRIDE_KEYS = (*_TIMM_KEYS, "fpn_channels", "freeze_at", "norm", "pixel_stats", "small")


class FrozenBatchNormReLU(FrozenBatchNorm2d):
    """torchvision's FrozenBatchNorm2d followed by an optional ReLU: the norm+act slot of timm's ConvNormAct.

    Its buffers keep BN's names (``weight``, ``bias``, ``running_mean``, ``running_var``), so timm and
    detectron2 state dicts load into it; ``num_batches_tracked`` is dropped on load.
    """

    def __init__(self, num_features: int, apply_act: bool = True):
        super().__init__(num_features)
        self.apply_act = apply_act

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        return F.relu(x) if self.apply_act else x


def frozen_norm_act(num_features: int, apply_act: bool = True, **_: Any) -> FrozenBatchNormReLU:
    """Factory with the signature timm's ConvNormAct calls its ``norm_layer`` with (extra kwargs ignored)."""
    return FrozenBatchNormReLU(num_features, apply_act=apply_act)


NORM_LAYERS = {"FrozenBN": frozen_norm_act, "BN": BatchNormAct2d}


def build_vovnet_body(config: Mapping[str, Any], norm: str = "FrozenBN") -> VovNet:
    """timm's VovNet for a timm VoVNet config, with ``norm``, eSE on every OSA block and no classifier.

    The names of the eSE layers that timm's own model lacks are kept in ``body.added_ese_keys`` (the
    state-dict keys that a timm checkpoint cannot provide).
    """
    body = VovNet(cfg=dict(config), num_classes=0, norm_layer=NORM_LAYERS[norm])
    body.head = nn.Identity()
    added = []
    for stage_index, stage in enumerate(body.stages):
        for block_index, block in enumerate(stage.blocks):
            if block.attn is None:
                block.attn = create_attn("ese", block.conv_concat.conv.out_channels)
                nn.init.kaiming_normal_(block.attn.fc.weight, mode="fan_out", nonlinearity="relu")  # as timm
                prefix = f"stages.{stage_index}.blocks.{block_index}.attn.fc."
                added += [prefix + "weight", prefix + "bias"]
    body.added_ese_keys = tuple(added)
    return body


class VoVNetFPN(nn.Module):
    """VoVNetV2 body + FPN, returning the pyramid levels P3..P7.

    Backbone interface (shared with ``resnet.ResNet``): ``forward(x)`` takes normalised images
    [B, 3, H, W] and returns ``{"P3": [B, C, H/8, W/8], ..., "P7": [B, C, H/128, W/128]}`` (C =
    ``out_channels``; sizes rounded up). ``out_feature`` is the level the transformer reads,
    ``out_stride`` its stride; ``size_divisibility``, ``pixel_mean``/``pixel_std`` (0-255 scale, in
    ``input_format`` order) tell the caller how to normalise and pad images.
    """

    feature_strides = LEVEL_STRIDES

    def __init__(self, body: VovNet, fpn_channels: int, out_level: str, pixel_stats: str, freeze_at: int):
        super().__init__()
        self.body = body
        stage_channels = [info["num_chs"] for info in body.feature_info[-3:]]  # stages 3, 4, 5
        self.fpn = FPN(stage_channels, fpn_channels)
        self.out_feature = out_level
        self.out_stride = LEVEL_STRIDES[out_level]
        self.out_channels = fpn_channels
        # Multiples of 32 keep the top-down path exact; a coarser transformer level needs its own
        # stride so that its padding mask matches the image exactly.
        self.size_divisibility = max(32, self.out_stride)
        mean, std, input_format = PIXEL_STATS[pixel_stats]
        self.pixel_stats = pixel_stats  # the PIXEL_STATS preset, checked by the weight loaders
        self.pixel_mean, self.pixel_std, self.input_format = list(mean), list(std), input_format
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> None:
        """Stop gradients into the stem (``freeze_at >= 1``) and stages 2..``freeze_at``."""
        frozen = [self.body.stem, *self.body.stages][:freeze_at]
        for module in frozen:
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.body.stem(x)
        stage_outputs = []
        for stage in self.body.stages:
            x = stage(x)
            stage_outputs.append(x)
        return self.fpn(stage_outputs[1:])


def build_vovnet_fpn(depth: int, *, out_level: str = "P5", overrides: Mapping[str, Any] | None = None
                     ) -> VoVNetFPN:
    """VoVNetV2-``depth`` (39, 57 or 99) + FPN; see the module docstring for ``overrides``.

    ``out_level`` ("P3".."P7") is the level the transformer reads: P5 (stride 32, as R-101) by default;
    "P7" is what the unmodified ETRI code hands the transformer.
    """
    if depth not in TIMM_VARIANTS:
        raise UserError(f"VoVNet depth must be one of {sorted(TIMM_VARIANTS)}, got {depth!r}")
    if out_level not in LEVELS:
        raise UserError(f"model.transformer_level: expected one of {list(LEVELS)}, got {out_level!r}")
    options = _resolve_overrides(overrides)
    config = dict(model_cfgs[TIMM_VARIANTS[depth]])
    for key, (timm_key, _) in _TIMM_KEYS.items():
        if key in options:
            config[timm_key] = list(options[key]) if isinstance(options[key], list) else options[key]
    pixel_stats = options.get("pixel_stats", "detectron2")
    if pixel_stats == "timm":
        if depth not in TIMM_PIXEL_STATS:
            raise UserError(f"model.overrides.backbone.pixel_stats: timm has no VoVNet-{depth} weights; "
                            f"use 'detectron2'")
        pixel_stats = TIMM_PIXEL_STATS[depth]
    body = build_vovnet_body(config, options.get("norm", "FrozenBN"))
    return VoVNetFPN(body, options.get("fpn_channels", 256), out_level, pixel_stats,
                     options.get("freeze_at", 0))


def _resolve_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check the override keys and values; expand ``small``. Raises UserError naming the bad key."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise UserError(f"model.overrides.backbone: unknown key(s) {unknown} for a VoVNet backbone; "
                        f"allowed: {list(OVERRIDE_KEYS)}")
    options = dict(SMALL_OVERRIDES) if overrides.pop("small", False) else {}
    options.update(overrides)
    for key, (_, length) in _TIMM_KEYS.items():
        if key in options:
            _check_ints(key, options[key], length)
    for key in ("fpn_channels", "freeze_at"):
        if key in options:
            _check_ints(key, options[key], None, minimum=0 if key == "freeze_at" else 1)
    if options.get("freeze_at", 0) > 5:
        raise UserError(f"model.overrides.backbone.freeze_at: expected 0..5, got {options['freeze_at']}")
    if options.get("norm", "FrozenBN") not in NORM_LAYERS:
        raise UserError(f"model.overrides.backbone.norm: expected one of {list(NORM_LAYERS)}, "
                        f"got {options['norm']!r}")
    stats = options.get("pixel_stats", "detectron2")
    if stats not in (*PIXEL_STATS, "timm"):
        raise UserError(f"model.overrides.backbone.pixel_stats: expected one of {[*PIXEL_STATS, 'timm']}, "
                        f"got {stats!r}")
    return options


def _check_ints(key: str, value: Any, length: int | None, minimum: int = 1) -> None:
    values = value if length is not None and isinstance(value, list) else [value]
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values)
    if not ok or (length is not None and (not isinstance(value, list) or len(value) != length)):
        shape = f"a list of {length} integers" if length is not None else "an integer"
        raise UserError(f"model.overrides.backbone.{key}: expected {shape} >= {minimum}, got {value!r}")
