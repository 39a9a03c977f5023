"""The one way to build a variant of the catalogue (``itersg.catalog``) as a torch model.

| backbone | extra head |
|---|---|
| ResNet-101 (detectron2/MSRA layout), res5 | - |
| VoVNetV2-FPN (``vovnet.build_vovnet_fpn``), the variant's ``transformer_level`` | - or CenterMask heads |

EGTR (``egtr-r50``) is its own model: a Deformable DETR on timm's ResNet-50 with EGTR's relation head
(``build_egtr``); ``build_detr`` gives its Deformable DETR for the VG pretraining.

SpeaQ variants are the same models with more relation queries and SpeaQ's grouped one-to-many matching
in the loss (``itersg.models.losses.speaq``). ``overrides`` (see ``itersg.models.config``) shrinks the same
classes for the demo and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from itersg.catalog import METHODS, TRANSFORMER_LEVELS, VARIANTS, Variant, get_variant
from itersg.errors import UserError
from itersg.models.backbones.resnet import build_resnet
from itersg.models.config import check_overrides, model_config, resnet_config
from itersg.models.detectors.deformable_detr import DeformableDetrConfig, build_deformable_detr
from itersg.models.detectors.detr import DETR
from itersg.models.relation.egtr import EGTRRelationHead
from itersg.models.relation.egtr_model import EGTR
from itersg.models.relation.iterativesg import IterativeSG

__all__ = ["METHODS", "VARIANTS", "Variant", "build_aux_head", "build_backbone", "build_detr", "build_egtr",
           "build_model", "count_parameters", "get_variant"]


def build_backbone(variant: str, *, overrides: Mapping[str, Any] | None = None,
                   transformer_level: str | None = None) -> nn.Module:
    """The backbone (+ FPN) of ``variant``; ``transformer_level`` (VoVNet only) replaces the variant's
    own FPN level (``model.transformer_level``; None = the variant's)."""
    spec = get_variant(variant)
    backbone_overrides = check_overrides(overrides).get("backbone")
    if spec.backbone == "resnet":
        return build_resnet(resnet_config(backbone_overrides, depth=spec.depth))
    transformer_level = transformer_level or spec.transformer_level
    if transformer_level not in TRANSFORMER_LEVELS:
        raise UserError(f"model.transformer_level: {transformer_level!r} is not one of "
                        f"{list(TRANSFORMER_LEVELS)}")
    from itersg.models.backbones.vovnet import build_vovnet_fpn  # timm: only the VoVNet variants load it

    return build_vovnet_fpn(spec.depth, out_level=transformer_level, overrides=backbone_overrides)


def build_aux_head(variant: str, backbone: nn.Module, *, num_classes: int = 150,
                   overrides: Mapping[str, Any] | None = None) -> nn.Module | None:
    """The auxiliary head of ``variant`` (CenterMask heads), or None."""
    spec = get_variant(variant)
    if spec.aux_head is None:
        return None
    from itersg.models.detectors.centermask import build_centermask_heads

    return build_centermask_heads(num_classes=num_classes, mask_classes=80, in_channels=backbone.out_channels,
                                  overrides=check_overrides(overrides).get("aux_head"))


def build_model(variant: str, *, num_classes: int = 150, num_predicates: int = 50,
                overrides: Mapping[str, Any] | None = None, transformer_level: str | None = None) -> nn.Module:
    """The scene-graph model of ``variant``: IterativeSG with its backbone (and auxiliary head), or EGTR.

    With no ``overrides`` this is the published model: ``r101-detr`` has 93,251,470 parameters,
    ``r101-detr-speaq`` 93,328,270, ``egtr-r50`` 42,510,356.
    """
    if get_variant(variant).method == "egtr":
        return build_egtr(overrides, num_classes=num_classes, num_predicates=num_predicates)
    config = model_config(overrides, num_classes=num_classes, num_predicates=num_predicates,
                          speaq=get_variant(variant).method == "speaq")
    backbone = build_backbone(variant, overrides=overrides, transformer_level=transformer_level)
    aux_head = build_aux_head(variant, backbone, num_classes=num_classes, overrides=overrides)
    return IterativeSG(backbone, config, aux_head)


def build_detr(variant: str, *, num_classes: int = 150, overrides: Mapping[str, Any] | None = None,
               transformer_level: str | None = None) -> nn.Module:
    """The detector ``variant`` is pretrained as on VG objects: plain DETR on its backbone (300 queries as
    the reference), or for EGTR its Deformable DETR."""
    if get_variant(variant).detector == "deformable-detr":
        return build_deformable_detr(deformable_detr_config(overrides, num_classes=num_classes))
    config = model_config(overrides, num_classes=num_classes)
    return DETR(build_backbone(variant, overrides=overrides, transformer_level=transformer_level), config)


# model.overrides keys (the IterativeSG names) -> DeformableDetrConfig fields
_DEFORMABLE_DETR_KEYS = {"hidden_dim": "d_model", "nheads": "num_heads", "enc_layers": "encoder_layers",
                         "dec_layers": "decoder_layers", "dim_feedforward": "ffn_dim", "num_queries": "num_queries",
                         "dropout": "dropout"}
# ``model.overrides.backbone.small``: the same timm ResNet code, two blocks a stage and an eighth of the widths
SMALL_TIMM_RESNET = ("resnet18", (16, 32, 64, 128))


def deformable_detr_config(overrides: Mapping[str, Any] | None = None, *, num_classes: int = 150
                           ) -> DeformableDetrConfig:
    """EGTR's detector configuration with ``model.overrides`` applied (the keys IterativeSG's sizes use;
    ``backbone: {small: true}`` selects timm's ResNet-18 at widths 16-128)."""
    model_config(overrides)  # the same checks of the shared keys
    overrides = check_overrides(overrides)
    values = {field: overrides[key] for key, field in _DEFORMABLE_DETR_KEYS.items() if key in overrides}
    backbone = dict(overrides.get("backbone", {}))
    if unknown := sorted(set(backbone) - {"small"}):
        raise UserError(f"model.overrides.backbone: {unknown} do not apply to EGTR's timm ResNet-50; only `small`")
    if backbone.get("small"):
        values["backbone"], values["backbone_widths"] = SMALL_TIMM_RESNET
    return DeformableDetrConfig(num_classes=num_classes, **values)


def build_egtr(overrides: Mapping[str, Any] | None = None, *, num_classes: int = 150,
               num_predicates: int = 50) -> EGTR:
    """EGTR (Deformable DETR + its relation head); the frequency tables start empty (zeros) until the
    training split's statistics or a checkpoint fill them."""
    config = deformable_detr_config(overrides, num_classes=num_classes)
    relation = EGTRRelationHead(config.d_model, config.decoder_layers, config.num_heads, num_predicates,
                                num_classes)
    return EGTR(build_deformable_detr(config), relation)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"backbone": backbone (+ FPN) parameters, "total": all, "trainable": requires_grad}``, plus the
    parts a model names itself (EGTR: ``relation_additions``, ``frequency_table``)."""
    counts = {
        "backbone": sum(p.numel() for p in model.backbone.parameters()),
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if hasattr(model, "parameter_parts"):
        counts.update(model.parameter_parts())
    return counts
