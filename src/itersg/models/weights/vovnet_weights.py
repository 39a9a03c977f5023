"""Load ImageNet or centermask2 weights into ``VoVNetFPN`` (and ``CenterMaskHeads``) by explicit key maps.

Two sources, neither needing timm's hub, detectron2 or unsafe unpickling:

* timm ImageNet weights of ``ese_vovnet39b`` / ``ese_vovnet57b`` as a local state-dict file (``.pth``/
  ``.bin`` through ``torch.load(weights_only=True)``, or ``.safetensors``): timm's names are ours under
  ``body.``; the eSE layers that timm's model does not have keep their initialisation; the classifier
  is ignored.
* centermask2 / vovnet-detectron2 ``.pth`` files (``{"model": state_dict, ...}`` or a bare state dict)
  with detectron2 names such as ``backbone.bottom_up.stage2.OSA2_1.layers.0.OSA2_1_0/conv.weight``,
  ``backbone.fpn_lateral3.weight``, ``proposal_generator.fcos_head.cls_tower.0.weight`` or
  ``roi_heads.mask_head.mask_fcn1.weight``. A file without any ``backbone.``/``proposal_generator.``/
  ``roi_heads.`` key is read as a bare VoVNet (the ImageNet ``vovnet*_ese_detectron2.pth`` layout).

Every part present in the file (VoVNet body, FPN, FCOS head, mask head, MaskIoU head) must load
completely: any missing, unexpected or wrongly shaped tensor raises a UserError with counts and
examples, and nothing is changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from itersg.errors import UserError
from itersg.models.weights.checkpoint_keys import is_bn_counter, key_problems

if TYPE_CHECKING:
    from itersg.models.backbones.vovnet import VoVNetFPN
    from itersg.models.detectors.centermask import CenterMaskHeads

BOTTOM_UP = "backbone.bottom_up."
# Parts of a centermask2 checkpoint, most specific prefix first.
PARTS = ("backbone.bottom_up.", "backbone.", "proposal_generator.", "roi_heads.mask_head.",
         "roi_heads.maskiou_head.")
HEAD_PARTS = PARTS[2:]
_D2_LAYER = {"conv": "conv", "bn": "norm"}


@dataclass
class WeightLoadReport:
    """What a weight file did to a model. Names are ours, prefixed ``backbone.`` or ``heads.``."""

    source: str
    loaded: list[str] = field(default_factory=list)
    kept_init: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # names in the file, not used on purpose
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.source}: loaded {len(self.loaded)} tensors, "
                f"{len(self.kept_init)} kept their initialisation")
        if self.ignored:
            text += f", ignored {len(self.ignored)} from the file (e.g. {self.ignored[:3]})"
        return "; ".join([text, *self.warnings])


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file, ``{"model"|"state_dict": ...}`` unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weight file {path} does not exist; fetch the weights first or fix the path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is the user's to fix
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise UserError(f"cannot read weight file {path} as a PyTorch state dict (weights_only=True): "
                        f"{type(error).__name__}: {first_line}") from error
    for wrapper in ("model", "state_dict"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise UserError(f"weight file {path} does not hold a state dict of tensors")
    return dict(loaded)


def detectron2_backbone_key(name: str) -> str:
    """centermask2's name of one of our ``VoVNetFPN`` state-dict keys (KeyError if it has none)."""
    match = re.fullmatch(r"body\.stem\.(\d)\.(conv|bn)\.(\w+)", name)
    if match:
        return f"{BOTTOM_UP}stem.stem_{int(match[1]) + 1}/{_D2_LAYER[match[2]]}.{match[3]}"
    match = re.fullmatch(r"body\.stages\.(\d+)\.blocks\.(\d+)\.(.+)", name)
    if match:
        stage, osa, rest = int(match[1]) + 2, f"OSA{int(match[1]) + 2}_{int(match[2]) + 1}", match[3]
        block = f"{BOTTOM_UP}stage{stage}.{osa}."
        if layer := re.fullmatch(r"conv_mid\.(\d+)\.(conv|bn)\.(\w+)", rest):
            return f"{block}layers.{layer[1]}.{osa}_{layer[1]}/{_D2_LAYER[layer[2]]}.{layer[3]}"
        if layer := re.fullmatch(r"conv_concat\.(conv|bn)\.(\w+)", rest):
            return f"{block}concat.{osa}_concat/{_D2_LAYER[layer[1]]}.{layer[2]}"
        if layer := re.fullmatch(r"attn\.fc\.(weight|bias)", rest):
            return f"{block}ese.fc.{layer[1]}"
    match = re.fullmatch(r"fpn\.(lateral|output)_convs\.(\d)\.(weight|bias)", name)
    if match:
        return f"backbone.fpn_{match[1]}{int(match[2]) + 3}.{match[3]}"
    match = re.fullmatch(r"fpn\.top_block\.(p6|p7)\.(weight|bias)", name)
    if match:
        return f"backbone.top_block.{match[1]}.{match[2]}"
    raise KeyError(f"no centermask2 name for backbone tensor {name!r}")


def detectron2_key_map(backbone: VoVNetFPN, heads: CenterMaskHeads | None = None) -> dict[str, str]:
    """centermask2 name -> our name (``backbone.<key>`` / ``heads.<key>``) for every tensor of the modules
    (BatchNorm counters aside: centermask2 trains with FrozenBN, which has none)."""
    from itersg.models.detectors.centermask import detectron2_head_key

    mapping = {detectron2_backbone_key(name): f"backbone.{name}" for name in backbone.state_dict()
               if not is_bn_counter(name)}
    if heads is not None:
        mapping.update({detectron2_head_key(name): f"heads.{name}" for name in heads.state_dict()
                        if not is_bn_counter(name)})
    return mapping


def to_detectron2_state_dict(backbone: VoVNetFPN, heads: CenterMaskHeads | None = None) -> dict[str, Tensor]:
    """Our tensors under centermask2's names (the inverse of ``load_detectron2_weights``)."""
    ours = _qualified_state_dict(backbone, heads)
    return {d2: ours[name] for d2, name in detectron2_key_map(backbone, heads).items()}


def load_detectron2_weights(backbone: VoVNetFPN, path: str | Path, heads: CenterMaskHeads | None = None, *,
                            num_classes_may_differ: bool = False) -> WeightLoadReport:
    """Load a centermask2 / vovnet-detectron2 checkpoint; see the module docstring for the rules.

    Head tensors in the file are ignored (and reported) when ``heads`` is None. With
    ``num_classes_may_differ`` a wrongly shaped FCOS classifier (e.g. COCO's 80 classes) keeps its
    initialisation instead of raising.
    """
    source = {k: v for k, v in read_state_dict(path).items() if not is_bn_counter(k)}
    if source and not any(_part(k) for k in source):
        source = {BOTTOM_UP + k: v for k, v in source.items()}
    mapping = detectron2_key_map(backbone, heads)
    ours = _qualified_state_dict(backbone, heads)
    present = {_part(k) for k in source}
    ignored = sorted(k for k in source if heads is None and _part(k) in HEAD_PARTS)
    unexpected = sorted(k for k in source if k not in mapping and k not in ignored)
    missing = sorted(k for k in mapping if _part(k) in present and k not in source)
    mismatched = sorted(k for k in source if k in mapping and source[k].shape != ours[mapping[k]].shape)
    if num_classes_may_differ:
        classifier = [k for k in mismatched if k.startswith("proposal_generator.fcos_head.cls_logits.")]
        ignored += classifier
        mismatched = [k for k in mismatched if k not in classifier]
    _raise_on_problems(path, missing, unexpected, mismatched, source, ours, mapping)
    tensors = {mapping[k]: v for k, v in source.items() if k in mapping and k not in ignored}
    _copy_into(tensors, backbone, heads)
    return WeightLoadReport(str(path), sorted(tensors), sorted(set(ours) - set(tensors)), sorted(ignored),
                            _pixel_stats_warnings(backbone, ("detectron2",)))


def load_timm_vovnet_weights(backbone: VoVNetFPN, path: str | Path) -> WeightLoadReport:
    """Load timm ImageNet weights (``ese_vovnet39b``/``57b`` state dict) into the VoVNet body."""
    source = read_state_dict(path)
    if source and all(k.startswith("module.") for k in source):
        source = {k[len("module."):]: v for k, v in source.items()}
    ignored = sorted(k for k in source if k.startswith("head.") or is_bn_counter(k))
    body = {k: v for k, v in backbone.body.state_dict().items() if not is_bn_counter(k)}
    optional = set(backbone.body.added_ese_keys)
    missing = sorted(k for k in body if k not in source and k not in optional)
    unexpected = sorted(k for k in source if k not in body and k not in ignored)
    mismatched = sorted(k for k in source if k in body and source[k].shape != body[k].shape)
    mapping = {k: f"backbone.body.{k}" for k in body}
    ours = {f"backbone.body.{k}": v for k, v in body.items()}
    _raise_on_problems(path, missing, unexpected, mismatched, source, ours, mapping)
    tensors = {f"backbone.body.{k}": v for k, v in source.items() if k in body}
    _copy_into(tensors, backbone, None)
    all_names = _qualified_state_dict(backbone, None)
    return WeightLoadReport(str(path), sorted(tensors), sorted(set(all_names) - set(tensors)), ignored,
                            _pixel_stats_warnings(backbone, ("timm-imagenet", "timm-inception")))


def _pixel_stats_warnings(backbone: nn.Module, expected: tuple[str, ...]) -> list[str]:
    used = getattr(backbone, "pixel_stats", None)
    if used is None or used in expected:
        return []
    return [f"warning: these weights were trained with {' or '.join(expected)} pixel statistics but the "
            f"backbone normalises with {used!r} (set model.overrides.backbone.pixel_stats)"]


def _part(key: str) -> str:
    return next((part for part in PARTS if key.startswith(part)), "")


def _qualified_state_dict(backbone: nn.Module, heads: nn.Module | None) -> dict[str, Tensor]:
    """Every weight and statistic of the modules (BatchNorm counters aside) under ``backbone.``/``heads.``."""
    tensors = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    if heads is not None:
        tensors.update({f"heads.{k}": v for k, v in heads.state_dict().items()})
    return {k: v for k, v in tensors.items() if not is_bn_counter(k)}


def _raise_on_problems(path: str | Path, missing: list[str], unexpected: list[str], mismatched: list[str],
                       source: Mapping[str, Tensor], ours: Mapping[str, Tensor],
                       mapping: Mapping[str, str]) -> None:
    problems = key_problems(unexpected, missing,
                            [(k, tuple(source[k].shape), tuple(ours[mapping[k]].shape)) for k in mismatched])
    if not problems:
        return
    raise UserError(f"weight file {path} does not match the model: {'; '.join(problems)}. "
                    f"Check that the file is for this variant (depth, classes) and this source format; "
                    f"nothing was loaded")


@torch.no_grad()
def _copy_into(tensors: Mapping[str, Tensor], backbone: nn.Module, heads: nn.Module | None) -> None:
    for prefix, module in (("backbone.", backbone), ("heads.", heads)):
        if module is None:
            continue
        state = module.state_dict()
        for name, value in tensors.items():
            if name.startswith(prefix):
                state[name[len(prefix):]].copy_(value)
