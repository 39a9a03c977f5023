"""SGB's detector weights (maskrcnn-benchmark names) <-> ``SGBFasterRCNN``, by an explicit key map.

SGB (KaihuaTang/Scene-Graph-Benchmark.pytorch) saves ``{"model": state_dict, "optimizer": ..., ...}``
(``module.`` prefixes when trained under DistributedDataParallel). Its detector's names, from
``maskrcnn_benchmark/modeling`` (``backbone/{backbone,resnet,fpn}.py``, ``rpn/{rpn,anchor_generator}.py``,
``roi_heads/box_head/{roi_box_feature_extractors,roi_box_predictors}.py``):

* ``backbone.body.stem.{conv1.weight, bn1.*}``; ``backbone.body.layer{1-4}.{j}.{conv1-3.weight, bn1-3.*,
  downsample.0.weight, downsample.1.*}``; each FrozenBatchNorm2d holds ``weight``, ``bias``,
  ``running_mean``, ``running_var`` (buffers, no ``num_batches_tracked``), as torchvision's;
* ``backbone.fpn.fpn_inner{1-4}.{weight,bias}`` (1x1 laterals), ``backbone.fpn.fpn_layer{1-4}.*`` (3x3);
* ``rpn.head.{conv,cls_logits,bbox_pred}.*`` and the buffers ``rpn.anchor_generator.cell_anchors.{0-4}``
  (the anchors at the first cell of each level; compared with the model's, not loaded);
* ``roi_heads.box.feature_extractor.{fc6,fc7}.*``, ``roi_heads.box.predictor.{cls_score,bbox_pred}.*``.

A checkpoint of SGB's relation stage holds the same detector plus ``roi_heads.relation.*`` (and
``roi_heads.attribute.*`` with attributes on); those keys are reported as ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from itersg.errors import UserError
from itersg.models.detectors.faster_rcnn import SGBFasterRCNN, to_inclusive
from itersg.models.weights.checkpoint_keys import LoadReport, check_finite, key_problems, read_state_dict, rename

_BODY = "backbone.body."
# (SGB prefix, this project's prefix); inside the ResNeXt stages the names are the same in both.
SGB_PREFIXES: tuple[tuple[str, str], ...] = (
    (_BODY + "stem.conv1.", _BODY + "conv1."),
    (_BODY + "stem.bn1.", _BODY + "bn1."),
    *((f"{_BODY}layer{i}.", f"{_BODY}layer{i}.") for i in range(1, 5)),
    *((f"backbone.fpn.fpn_inner{i}.", f"backbone.fpn.inner_blocks.{i - 1}.0.") for i in range(1, 5)),
    *((f"backbone.fpn.fpn_layer{i}.", f"backbone.fpn.layer_blocks.{i - 1}.0.") for i in range(1, 5)),
    ("rpn.head.conv.", "rpn.head.conv.0.0."),
    ("rpn.head.cls_logits.", "rpn.head.cls_logits."),
    ("rpn.head.bbox_pred.", "rpn.head.bbox_pred."),
    ("roi_heads.box.feature_extractor.fc6.", "roi_heads.box_head.fc6."),
    ("roi_heads.box.feature_extractor.fc7.", "roi_heads.box_head.fc7."),
    ("roi_heads.box.predictor.cls_score.", "roi_heads.box_predictor.cls_score."),
    ("roi_heads.box.predictor.bbox_pred.", "roi_heads.box_predictor.bbox_pred."),
)
SGB_ANCHORS = "rpn.anchor_generator.cell_anchors."
SGB_IGNORED_PREFIXES = ("roi_heads.relation.", "roi_heads.attribute.")


def sgb_state_dict(model: SGBFasterRCNN) -> dict[str, Tensor]:
    """The model's weights in SGB's names, with SGB's anchor buffers (inclusive pixels): what SGB's
    ``model.state_dict()`` of this detector holds."""
    renamed, unmatched = rename(model.state_dict(), [(ours, sgb) for sgb, ours in SGB_PREFIXES])
    if unmatched:
        raise ValueError(f"model keys without an SGB name: {unmatched[:3]}")
    anchors = model.rpn.anchor_generator.cell_anchors
    return {**renamed, **{f"{SGB_ANCHORS}{i}": to_inclusive(a).cpu() for i, a in enumerate(anchors)}}


def _anchor_problems(model: SGBFasterRCNN, state: Mapping[str, Tensor]) -> list[str]:
    ours = [to_inclusive(a).cpu() for a in model.rpn.anchor_generator.cell_anchors]
    theirs = {k: v for k, v in state.items() if k.startswith(SGB_ANCHORS)}
    for level, anchors in enumerate(ours):
        stored = theirs.get(f"{SGB_ANCHORS}{level}")
        if stored is not None and (stored.shape != anchors.shape or not torch.allclose(stored.float(), anchors)):
            return [f"anchors of level {level} differ (file {stored.tolist()}, model {anchors.tolist()}): "
                    "the file was trained with other anchor sizes, strides or aspect ratios"]
    return []


def from_sgb(model: SGBFasterRCNN, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """SGB state dict -> (our state dict, problems in ``key_problems`` words, ignored SGB keys).

    Anchor buffers are compared with the model's anchors (a difference is a problem) and ignored;
    relation/attribute heads are ignored; every other key must have a place in the model.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    ignored = sorted(k for k in state if k.startswith((*SGB_IGNORED_PREFIXES, SGB_ANCHORS)))
    skipped = set(ignored)
    renamed, unmatched = rename({k: v for k, v in state.items() if k not in skipped}, SGB_PREFIXES)
    own = model.state_dict()
    unexpected = sorted(unmatched + [k for k in renamed if k not in own])
    missing = sorted(set(own) - set(renamed))
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sorted(renamed.items())
                  if k in own and v.shape != own[k].shape]
    problems = key_problems(unexpected, missing, mismatched) + _anchor_problems(model, state)
    return renamed, problems, ignored


def load_sgb_detector(model: SGBFasterRCNN, source: str | Path | Mapping[str, Tensor]) -> LoadReport:
    """Load SGB detector weights (a ``.pth`` path or a state dict in SGB names) into ``model``.

    Raises UserError, changing nothing, on any unexpected, missing or wrongly shaped tensor, differing
    anchors or non-finite values.
    """
    name = "state dict" if isinstance(source, Mapping) else str(source)
    state = dict(source) if isinstance(source, Mapping) else read_state_dict(source)
    renamed, problems, ignored = from_sgb(model, state)
    if problems:
        raise UserError(f"{name}: not SGB's detector for this configuration: {'; '.join(problems)}")
    check_finite(renamed, name)
    model.load_state_dict(renamed)
    return LoadReport("sgb", len(renamed), tuple(ignored))
