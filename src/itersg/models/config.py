"""Frozen configurations of the model components, and the small-model ``overrides`` that change them.

The defaults are the published IterativeSG R-101 model (``configs/iterative_model.yaml`` and
``configs/defaults.py`` of ubc-vision/IterativeSG). ``overrides`` (params.yaml ``model.overrides``)
builds small configurations of the SAME classes for the demo and the tests. Keys:

* ``hidden_dim`` (256), ``nheads`` (8), ``enc_layers`` (6), ``dec_layers`` (6),
  ``dim_feedforward`` (2048), ``dropout`` (0.1): the transformer.
* ``num_queries``: queries per decoder (300 for IterativeSG and for the VG-pretrained DETR).
* ``backbone``: a dict handed to the backbone builder. For ResNet: ``depth`` (50/101/152),
  ``blocks`` (four blocks-per-stage counts, overrides ``depth``), ``width`` (stem width, 64;
  stage ``i`` has bottleneck width ``width * 2**i`` and ``4 *`` that many output channels),
  ``freeze_at`` (2: stem and res2 frozen), ``size_divisibility`` (0: pad to the batch maximum only,
  as the reference), ``pixel_stats`` ("iterativesg": RGB with torchvision's mean/std as the yaml of
  the released checkpoints; "detectron2": BGR, std 1, the convention R-101.pkl was trained in),
  ``norm`` ("FrozenBN"; "BN" trains the norms, detectron2's ``MODEL.RESNETS.NORM``),
  ``small`` (true: ``blocks`` [1, 1, 1, 1], ``width`` 16, ``freeze_at`` 0, ``norm`` "BN" and output
  stride 8, for models trained from scratch on small images), ``replace_stride_with_dilation`` (3
  booleans for res3..res5, as torchvision). VoVNet variants receive the dict unchanged (see ``vovnet.py``).
* ``aux_head``: a dict handed to the CenterMask head builder (CenterMask variants only).
* ``speaq``: SpeaQ settings (``SpeaQConfig`` field names) for the SpeaQ variants; the other
  variants ignore it, so one ``overrides`` serves every variant of a mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from itersg.errors import UserError

# What configs/iterative_model.yaml normalises with (torchvision-style RGB statistics, 0-255 scale).
# The MSRA R-101.pkl was trained on BGR with std 1, but the released IterativeSG and DETR-VG
# checkpoints were trained with these values, so they are the defaults.
ISG_PIXEL_MEAN = (123.675, 116.280, 103.530)
ISG_PIXEL_STD = (58.395, 57.120, 57.375)
# (mean, std, input format) by ``pixel_stats`` name; "detectron2" is the MSRA/Caffe2 convention.
RESNET_PIXEL_STATS = {
    "iterativesg": (ISG_PIXEL_MEAN, ISG_PIXEL_STD, "RGB"),
    "detectron2": ((103.530, 116.280, 123.675), (1.0, 1.0, 1.0), "BGR"),
}

RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
TRANSFORMER_KEYS = ("hidden_dim", "nheads", "enc_layers", "dec_layers", "dim_feedforward", "dropout")
OVERRIDE_KEYS = (*TRANSFORMER_KEYS, "num_queries", "backbone", "aux_head", "speaq")


@dataclass(frozen=True)
class ResNetConfig:
    """A detectron2-layout bottleneck ResNet (stride in the 3x3 conv, FrozenBN everywhere)."""

    blocks: tuple[int, int, int, int] = RESNET_BLOCKS[101]
    width: int = 64
    freeze_at: int = 2
    size_divisibility: int = 0
    pixel_mean: tuple[float, float, float] = ISG_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = ISG_PIXEL_STD
    input_format: str = "RGB"
    # res3, res4, res5: keep the resolution and dilate instead of striding (small images in the demo)
    replace_stride_with_dilation: tuple[bool, bool, bool] = (False, False, False)
    norm: str = "FrozenBN"


@dataclass(frozen=True)
class TransformerConfig:
    """DETR transformer sizes (post-norm encoder and decoders)."""

    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1


@dataclass(frozen=True)
class SpeaQConfig:
    """SpeaQ (mlvlab/SpeaQ) as its README trains the released model; official names in brackets.

    * ``query_multiplier`` [MULTIPLY_QUERY 2, ONLY_PREDICATE_MULTIPLY True]: relation queries per
      subject/object query; each subject and object query serves that many consecutive relation queries.
    * ``num_groups`` [NUM_GROUPS 4, USE_GROUP_MASK True]: predicate groups (``query_groups``).
    * ``one_to_many_k`` [ONE2MANY_K 4, ONE2MANY_SCHEME dynamic]: queries whose quality sets how many
      queries a ground-truth relation is matched to (``one_to_many``).
    * ``quality`` [ONE2MANY_DYNAMIC_SCHEME max]: how subject and object IoU combine.
    * ``predicate_weight`` [ONE2MANY_PREDICATE_SCORE True, ONE2MANY_PREDICATE_WEIGHT -0.5]: weight of
      the predicate probability in the quality; None leaves it out.

    Matching is always per decoder layer [MATCH_INDEPENDENT True]: the official code implements the
    dynamic scheme only with it.
    """

    query_multiplier: int = 2
    num_groups: int = 4
    one_to_many_k: int = 4
    quality: str = "max"
    predicate_weight: float | None = -0.5


@dataclass(frozen=True)
class ModelConfig:
    """Everything but the backbone: classes, queries, the transformer and SpeaQ (None: IterativeSG)."""

    num_classes: int = 150
    num_predicates: int = 50
    num_queries: int = 300
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    speaq: SpeaQConfig | None = None

    @property
    def num_relation_queries(self) -> int:
        """Relation (predicate) queries: ``num_queries``, times SpeaQ's multiplier."""
        return self.num_queries * (self.speaq.query_multiplier if self.speaq else 1)


@dataclass(frozen=True)
class MatcherConfig:
    """Weights of the Hungarian matching cost (the reference uses the loss weights)."""

    cost_class: float = 1.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and the predicate re-weighting w_c = max(1, alpha / f_c) ** beta.

    ``aux_head_weight`` multiplies every loss an auxiliary head returns (params ``loss.fcos_weight``).
    """

    class_weight: float = 1.0
    bbox_weight: float = 5.0
    giou_weight: float = 2.0
    relation_weight: float = 1.0
    no_object_weight: float = 0.1
    no_relation_weight: float = 0.1
    alpha: float = 0.07
    beta: float = 0.75
    aux_head_weight: float = 1.0

    @classmethod
    def from_params(cls, loss: Mapping[str, Any], variant: Mapping[str, Any] | None = None) -> LossConfig:
        """Build from params.yaml's ``loss`` section and one ``variants.<name>`` entry (alpha, beta)."""
        variant = variant or {}
        values = {k: loss[k] for k in ("class_weight", "bbox_weight", "giou_weight", "no_object_weight",
                                       "no_relation_weight") if k in loss}
        if "fcos_weight" in loss:
            values["aux_head_weight"] = loss["fcos_weight"]
        values.update({k: variant[k] for k in ("alpha", "beta") if k in variant})
        return cls(**values)

    def matcher(self) -> MatcherConfig:
        """The matcher weights the reference derives from the loss weights."""
        return MatcherConfig(self.class_weight, self.bbox_weight, self.giou_weight)


def check_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``overrides`` as a dict, or raise UserError naming an unknown key."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise UserError(f"model.overrides: unknown key(s) {unknown}; allowed: {list(OVERRIDE_KEYS)}")
    for key in ("backbone", "aux_head", "speaq"):
        if not isinstance(overrides.get(key, {}), Mapping):
            raise UserError(f"model.overrides.{key}: expected a mapping, got {overrides[key]!r}")
    return overrides


def model_config(overrides: Mapping[str, Any] | None = None, *, num_classes: int = 150,
                 num_predicates: int = 50, speaq: bool = False) -> ModelConfig:
    """The published model configuration with the transformer/query ``overrides`` applied.

    ``speaq``: a SpeaQ model (``SpeaQConfig`` with ``overrides["speaq"]`` applied); otherwise
    ``overrides["speaq"]`` is not used.
    """
    overrides = check_overrides(overrides)
    transformer = dataclasses.replace(
        TransformerConfig(), **{k: overrides[k] for k in TRANSFORMER_KEYS if k in overrides})
    values: dict[str, Any] = {"num_queries": overrides["num_queries"]} if "num_queries" in overrides else {}
    if speaq:
        values["speaq"] = speaq_config(overrides.get("speaq"))
    config = ModelConfig(num_classes=num_classes, num_predicates=num_predicates, transformer=transformer,
                         **values)
    _check_positive(config)
    return config


SPEAQ_QUALITIES = ("min", "max", "gm", "am")


def speaq_config(overrides: Mapping[str, Any] | None = None) -> SpeaQConfig:
    """The released SpeaQ settings with ``model.overrides.speaq`` applied and checked."""
    overrides = dict(overrides or {})
    names = [f.name for f in dataclasses.fields(SpeaQConfig)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise UserError(f"model.overrides.speaq: unknown key(s) {unknown}; allowed: {names}")
    config = SpeaQConfig(**overrides)
    for key in ("query_multiplier", "num_groups", "one_to_many_k"):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"model.overrides.speaq.{key}: expected a positive integer, got {value!r}")
    if config.quality not in SPEAQ_QUALITIES:
        raise UserError(f"model.overrides.speaq.quality: {config.quality!r} is not one of {list(SPEAQ_QUALITIES)}")
    weight = config.predicate_weight
    if weight is not None and (not isinstance(weight, (int, float)) or isinstance(weight, bool)):
        raise UserError(f"model.overrides.speaq.predicate_weight: expected a number or null, got {weight!r}")
    return config


def _check_positive(config: ModelConfig) -> None:
    t = config.transformer
    sizes = {"hidden_dim": t.hidden_dim, "nheads": t.nheads, "enc_layers": t.enc_layers,
             "dec_layers": t.dec_layers, "dim_feedforward": t.dim_feedforward,
             "num_queries": config.num_queries}
    for key, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise UserError(f"model.overrides.{key}: expected a positive integer, got {value!r}")
    if t.hidden_dim % t.nheads or t.hidden_dim % 2:
        raise UserError(f"model.overrides: hidden_dim ({t.hidden_dim}) must be even and divisible by "
                        f"nheads ({t.nheads})")
    if not isinstance(t.dropout, (int, float)) or isinstance(t.dropout, bool) or not 0.0 <= t.dropout < 1.0:
        raise UserError(f"model.overrides.dropout: expected a value in [0, 1), got {t.dropout!r}")
    if config.speaq is not None and config.speaq.one_to_many_k > config.num_relation_queries:
        raise UserError(f"model.overrides.speaq.one_to_many_k ({config.speaq.one_to_many_k}) exceeds the "
                        f"{config.num_relation_queries} relation queries")


RESNET_KEYS = ("depth", "blocks", "width", "freeze_at", "size_divisibility", "pixel_stats", "small",
               "replace_stride_with_dilation", "norm")
BACKBONE_NORMS = ("FrozenBN", "BN")


def resnet_config(overrides: Mapping[str, Any] | None = None, *, depth: int = 101) -> ResNetConfig:
    """A ResNet configuration from ``model.overrides.backbone`` (see the module docstring)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(RESNET_KEYS))
    if unknown:
        raise UserError(f"model.overrides.backbone: unknown key(s) {unknown} for ResNet; "
                        f"allowed: {list(RESNET_KEYS)}")
    values: dict[str, Any] = {}
    if overrides.pop("small", False):
        # for the demo's 64-128 px images: output stride 8 (res4, res5 dilated) keeps a 10x10 feature map;
        # trained from scratch, so the norms learn (an identity FrozenBN lets activations grow unchecked)
        values.update(blocks=(1, 1, 1, 1), width=16, freeze_at=0, replace_stride_with_dilation=(False, True, True),
                      norm="BN")
    depth = overrides.pop("depth", depth)
    if depth not in RESNET_BLOCKS:
        raise UserError(f"model.overrides.backbone.depth: {depth!r} is not one of {sorted(RESNET_BLOCKS)}")
    values.setdefault("blocks", RESNET_BLOCKS[depth])
    stats = overrides.pop("pixel_stats", "iterativesg")
    if stats not in RESNET_PIXEL_STATS:
        raise UserError(f"model.overrides.backbone.pixel_stats: {stats!r} is not one of "
                        f"{list(RESNET_PIXEL_STATS)}")
    values["pixel_mean"], values["pixel_std"], values["input_format"] = RESNET_PIXEL_STATS[stats]
    values.update(overrides)
    values["blocks"] = tuple(values["blocks"])
    dilation = tuple(values.get("replace_stride_with_dilation", (False, False, False)))
    if len(dilation) != 3 or not all(isinstance(d, bool) for d in dilation):
        raise UserError("model.overrides.backbone.replace_stride_with_dilation: expected 3 booleans "
                        f"(res3, res4, res5), got {dilation!r}")
    values["replace_stride_with_dilation"] = dilation
    if len(values["blocks"]) != 4 or not all(isinstance(b, int) and b >= 1 for b in values["blocks"]):
        raise UserError(f"model.overrides.backbone.blocks: expected 4 positive integers, "
                        f"got {values['blocks']}")
    if values.get("norm", "FrozenBN") not in BACKBONE_NORMS:
        raise UserError(f"model.overrides.backbone.norm: expected one of {list(BACKBONE_NORMS)}, "
                        f"got {values['norm']!r}")
    for key, minimum in (("width", 1), ("freeze_at", 0), ("size_divisibility", 0)):
        if key in values and (not isinstance(values[key], int) or values[key] < minimum):
            raise UserError(f"model.overrides.backbone.{key}: expected an integer >= {minimum}, "
                            f"got {values[key]!r}")
    return ResNetConfig(**values)
