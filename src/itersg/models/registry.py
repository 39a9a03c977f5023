"""The named variants of the study and the one way to build them.

| variant | backbone | extra head |
|---|---|---|
| r101-detr | ResNet-101 (detectron2/MSRA layout), res5 | - |
| vovnet{39,57,99}-detr | VoVNetV2-FPN (``vovnet.build_vovnet_fpn``), ``transformer_level`` | - |
| vovnet{39,57,99}-centermask | as above | CenterMask heads (``centermask.build_centermask_heads``) |

Every variant trains with one of two methods: IterativeSG, or SpeaQ (the ``-speaq`` versions: the
same model with more relation queries, and SpeaQ's grouped one-to-many matching in the loss, see
``itersg.models.speaq``). ``r101-detr-speaq`` is the released SpeaQ model (93,328,270 parameters);
``r101-detr-speaq-baseline`` is IterativeSG's r101-detr under another name, so that params.yaml can
train it with SpeaQ's recipe (SpeaQ's baseline) beside r101-detr with IterativeSG's.

``overrides`` (see ``itersg.models.config``) shrinks the same classes for the demo and the tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from itersg.errors import UserError
from itersg.models.config import check_overrides, model_config, resnet_config
from itersg.models.detr import DETR
from itersg.models.iterativesg import IterativeSG
from itersg.models.resnet import build_resnet

TRANSFORMER_LEVELS = ("P3", "P4", "P5", "P6", "P7")


@dataclass(frozen=True)
class Variant:
    """A study variant: backbone family and depth, and an optional auxiliary head."""

    name: str
    backbone: str
    depth: int
    aux_head: str | None = None
    method: str = "iterativesg"


METHODS = ("iterativesg", "speaq")
_ISG_VARIANTS = (
    Variant("r101-detr", "resnet", 101),
    *(Variant(f"vovnet{d}-detr", "vovnet", d) for d in (39, 57, 99)),
    *(Variant(f"vovnet{d}-centermask", "vovnet", d, "centermask") for d in (39, 57, 99)),
)
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    *_ISG_VARIANTS,
    *(Variant(f"{v.name}-speaq", v.backbone, v.depth, v.aux_head, "speaq") for v in _ISG_VARIANTS),
    Variant("r101-detr-speaq-baseline", "resnet", 101),
)}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise UserError(f"unknown variant {name!r}; choose one of {list(VARIANTS)}")
    return VARIANTS[name]


def _import_sibling(module: str, variant: str):
    try:
        return importlib.import_module(f"itersg.models.{module}")
    except ModuleNotFoundError as err:
        if err.name != f"itersg.models.{module}":
            raise
        raise UserError(f"variant {variant!r} needs itersg.models.{module}, "
                        "which this installation lacks") from None


def build_backbone(variant: str, *, overrides: Mapping[str, Any] | None = None,
                   transformer_level: str = "P5") -> nn.Module:
    """The backbone (+ FPN) of ``variant``; ``transformer_level`` picks the FPN level (VoVNet only)."""
    spec = get_variant(variant)
    backbone_overrides = check_overrides(overrides).get("backbone")
    if spec.backbone == "resnet":
        return build_resnet(resnet_config(backbone_overrides, depth=spec.depth))
    if transformer_level not in TRANSFORMER_LEVELS:
        raise UserError(f"model.transformer_level: {transformer_level!r} is not one of "
                        f"{list(TRANSFORMER_LEVELS)}")
    vovnet = _import_sibling("vovnet", variant)
    return vovnet.build_vovnet_fpn(spec.depth, out_level=transformer_level, overrides=backbone_overrides)


def build_aux_head(variant: str, backbone: nn.Module, *, num_classes: int = 150,
                   overrides: Mapping[str, Any] | None = None) -> nn.Module | None:
    """The auxiliary head of ``variant`` (CenterMask heads), or None."""
    spec = get_variant(variant)
    if spec.aux_head is None:
        return None
    centermask = _import_sibling("centermask", variant)
    return centermask.build_centermask_heads(num_classes=num_classes, mask_classes=80,
                                             in_channels=backbone.out_channels,
                                             overrides=check_overrides(overrides).get("aux_head"))


def build_model(variant: str, *, num_classes: int = 150, num_predicates: int = 50,
                overrides: Mapping[str, Any] | None = None, transformer_level: str = "P5") -> IterativeSG:
    """IterativeSG with the backbone (and auxiliary head) of ``variant``.

    With no ``overrides`` this is the published model: ``r101-detr`` has 93,251,470 parameters,
    ``r101-detr-speaq`` 93,328,270.
    """
    config = model_config(overrides, num_classes=num_classes, num_predicates=num_predicates,
                          speaq=get_variant(variant).method == "speaq")
    backbone = build_backbone(variant, overrides=overrides, transformer_level=transformer_level)
    aux_head = build_aux_head(variant, backbone, num_classes=num_classes, overrides=overrides)
    return IterativeSG(backbone, config, aux_head)


def build_detr(variant: str, *, num_classes: int = 150, overrides: Mapping[str, Any] | None = None,
               transformer_level: str = "P5") -> DETR:
    """Plain DETR on the backbone of ``variant`` (VG pretraining; 300 queries as the reference)."""
    config = model_config(overrides, num_classes=num_classes)
    return DETR(build_backbone(variant, overrides=overrides, transformer_level=transformer_level), config)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"backbone": backbone (+ FPN) parameters, "total": all, "trainable": requires_grad}``."""
    return {
        "backbone": sum(p.numel() for p in model.backbone.parameters()),
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
