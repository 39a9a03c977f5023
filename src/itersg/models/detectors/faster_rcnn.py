"""The VG Faster R-CNN (X-101-32x8d-FPN) of Scene-Graph-Benchmark (KaihuaTang/Scene-Graph-Benchmark.pytorch, "SGB").

Built from torchvision's detection parts (ResNeXt with frozen batch norm, ``BackboneWithFPN``, ``RPNHead``,
``RegionProposalNetwork``, ``MultiScaleRoIAlign``, ``RoIHeads``, ``BoxCoder``, ``nms``); only what
maskrcnn-benchmark does differently is written here. Settings: ``SGBDetectorConfig`` (SGB's
``configs/e2e_relation_detector_X_101_32_8_FPN_1x.yaml`` over ``maskrcnn_benchmark/config/defaults.py``) and
``SGB_RELATION_STAGE`` (the same detector as ``e2e_relation_X_101_32_8_FPN_1x.yaml`` runs it under the
relation models: 80 detections, one label per box). SGB names of the weights: ``weights/sgb_keys.py``.

Conventions:

* Labels are SGB's: 0 is background, objects are 1..150 (targets and outputs alike).
* Boxes given to and returned by ``SGBFasterRCNN`` are x1, y1, x2, y2 in pixels of the input image in
  maskrcnn-benchmark's inclusive convention (width = x2 - x1 + 1). Inside, after scaling to the network
  input, boxes are kept "exclusive" (x2 + 1, y2 + 1): torchvision's IoU, NMS and ``BoxCoder`` on exclusive
  boxes are maskrcnn-benchmark's +1 formulas (areas, IoU, box deltas; equal up to float rounding), so
  they are reused unchanged. RoIAlign (torchvision's aligned=False is maskrcnn-benchmark's legacy
  RoIAlign) and the FPN level of a box take the inclusive box, as in maskrcnn-benchmark.

Differences from maskrcnn-benchmark that remain: the resize (``F.interpolate`` with antialias, rounded to
integers, for PIL's bilinear resize of the uint8 image); boxes scaled back by the reciprocal of the
resize factor (SGB: by original / resized size; float rounding); random draws of the anchor and proposal
samplers (same algorithm, another random stream); the order of detections when ``nms_filter_duplicates``
is off; initialisation of the ResNeXt (torchvision's; replaced by any checkpoint); no fp16 training
(SGB: apex O1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign, nms
from torchvision.ops.poolers import LevelMapper

from itersg.models.layers.preprocess import ImageNormalizer

CAFFE2_PIXEL_MEAN = (102.9801, 115.9465, 122.7717)  # BGR, 0-255 (INPUT.PIXEL_MEAN)
FEATURE_NAMES = ("0", "1", "2", "3")  # P2..P5 as BackboneWithFPN names them; P6 is "pool"


@dataclass(frozen=True)
class SGBDetectorConfig:
    """SGB's detector settings; SGB's config keys in brackets (MODEL. left out).

    Backbone: ``blocks`` [CONV_BODY R-101-FPN], ``groups`` / ``width_per_group`` [RESNETS.NUM_GROUPS 32,
    WIDTH_PER_GROUP 8; STRIDE_IN_1X1 False: stride in the 3x3 conv, as torchvision], ``freeze_at``
    [BACKBONE.FREEZE_CONV_BODY_AT 2: stem and layer1], ``fpn_channels`` [RESNETS.BACKBONE_OUT_CHANNELS].
    Input [INPUT.*, DATALOADER.SIZE_DIVISIBILITY]: shorter side ``min_size``, longer side at most
    ``max_size`` (train and test alike), BGR 0-255 minus the Caffe2 means, std 1.
    RPN [RPN.*]: one anchor size per level with its stride; top-n before NMS (per level), after NMS (per
    level, ``post_nms_top_n``) and over all levels (``fpn_post_nms_top_n``, per image:
    FPN_POST_NMS_PER_BATCH False); train/test pairs. ``add_gt_proposals``
    [ROI_RELATION_HEAD.ADD_GTBOX_TO_PROPOSAL_IN_TRAIN]: SGB appends ground truth to the proposals only then.
    Box head [ROI_BOX_HEAD.*, ROI_HEADS.*]: RoIAlign 7x7, sampling ratio 2, one FPN level per box
    (FPN2MLPFeatureExtractor with cat_all_levels False); fc6/fc7 to ``mlp_dim``; class-specific boxes.
    Test: class probability > ``score_thresh``, NMS per class (``nms``, ROI_HEADS.NMS 0.3, at most
    ``post_nms_per_class`` per class), ``nms_filter_duplicates`` (one label per box), at most
    ``detections_per_img``. Smooth L1 betas (fixed in SGB's loss code): RPN 1/9 (torchvision's RPN loss
    has the same), box head ``box_loss_beta`` 1.
    """

    blocks: tuple[int, int, int, int] = (3, 4, 23, 3)
    groups: int = 32
    width_per_group: int = 8
    freeze_at: int = 2
    fpn_channels: int = 256
    min_size: int = 600
    max_size: int = 1000
    pixel_mean: tuple[float, float, float] = CAFFE2_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    size_divisibility: int = 32
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    anchor_strides: tuple[int, ...] = (4, 8, 16, 32, 64)
    aspect_ratios: tuple[float, ...] = (0.23232838, 0.63365731, 1.28478321, 3.15089189)  # height / width
    straddle_thresh: float = 0.0
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    pre_nms_top_n_train: int = 12000
    pre_nms_top_n_test: int = 6000
    post_nms_top_n_train: int = 2000
    post_nms_top_n_test: int = 1000
    fpn_post_nms_top_n_train: int = 2000
    fpn_post_nms_top_n_test: int = 2000
    rpn_nms: float = 0.7
    add_gt_proposals: bool = False
    pooler_resolution: int = 7
    pooler_scales: tuple[float, ...] = (0.25, 0.125, 0.0625, 0.03125)
    pooler_sampling_ratio: int = 2
    mlp_dim: int = 4096
    num_classes: int = 151  # 150 VG objects + background (index 0)
    roi_fg_iou: float = 0.5
    roi_bg_iou: float = 0.3
    roi_batch_size_per_image: int = 256
    roi_positive_fraction: float = 0.5
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    box_loss_beta: float = 1.0
    score_thresh: float = 0.01
    nms: float = 0.3
    post_nms_per_class: int = 300
    nms_filter_duplicates: bool = False
    detections_per_img: int = 256


# The detector as e2e_relation_X_101_32_8_FPN_1x.yaml runs it under SGB's relation models (SGDet).
SGB_RELATION_STAGE = dataclasses.replace(
    SGBDetectorConfig(), pre_nms_top_n_train=6000, post_nms_top_n_train=1000, fpn_post_nms_top_n_train=1000,
    fpn_post_nms_top_n_test=1000, detections_per_img=80, nms_filter_duplicates=True, add_gt_proposals=True)


# --- maskrcnn-benchmark's box conventions -------------------------------------------------------------

_PLUS_ONE = torch.tensor([0.0, 0.0, 1.0, 1.0])


def to_exclusive(boxes: Tensor) -> Tensor:
    """Inclusive boxes [..., 4] (width x2 - x1 + 1) -> exclusive ones (x2 + 1, y2 + 1), same units."""
    return boxes + _PLUS_ONE.to(boxes)


def to_inclusive(boxes: Tensor) -> Tensor:
    """Exclusive boxes [..., 4] -> maskrcnn-benchmark's inclusive ones (x2 - 1, y2 - 1)."""
    return boxes - _PLUS_ONE.to(boxes)


def clip_exclusive(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Exclusive boxes [..., 4] clipped as BoxList.clip_to_image: inclusive corners in [0, W-1] x [0, H-1]."""
    height, width = size
    x1, y1 = boxes[..., 0].clamp(0, width - 1), boxes[..., 1].clamp(0, height - 1)
    x2, y2 = boxes[..., 2].clamp(1, width), boxes[..., 3].clamp(1, height)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def sgb_resize_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Network input (height, width) of an image, as maskrcnn-benchmark's ``Resize.get_size``."""
    short, long = min(height, width), max(height, width)
    size = min_size
    if long / short * size > max_size:
        size = round(max_size * short / long)  # Python 3 round: half to even, as SGB
    if short == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def sgb_cell_anchors(stride: int, size: float, aspect_ratios: Sequence[float]) -> Tensor:
    """Anchors [A, 4] (inclusive pixels, one per ratio) at the first cell of a level, as SGB generates them.

    Width and height are rounded at the size of the stride and then scaled by ``size / stride``, and
    anchors are centred on ((stride - 1) / 2, (stride - 1) / 2); torchvision's ``AnchorGenerator``
    instead rounds the final corners around 0 (size 32, ratio 0.2323: SGB [-30, -6, 33, 9], torchvision
    [-33, -8, 33, 8]), so its generator is not used for the cell anchors.
    """
    ratios = torch.tensor(aspect_ratios, dtype=torch.float64, device="cpu")
    widths = torch.round(torch.sqrt(stride * stride / ratios))  # round half to even, as np.round
    heights = torch.round(widths * ratios)
    widths, heights = widths * (size / stride), heights * (size / stride)
    center = (stride - 1) / 2
    half_w, half_h = (widths - 1) / 2, (heights - 1) / 2
    return torch.stack((center - half_w, center - half_h, center + half_w, center + half_h), dim=1).float()


class SGBAnchorGenerator(AnchorGenerator):
    """torchvision's grid of anchors with SGB's cell anchors (exclusive boxes) and fixed strides per level."""

    def __init__(self, sizes: Sequence[int], aspect_ratios: Sequence[float], strides: Sequence[int]):
        super().__init__(tuple((s,) for s in sizes), (tuple(aspect_ratios),) * len(sizes))
        self.strides = tuple(strides)
        self.cell_anchors = [to_exclusive(sgb_cell_anchors(stride, size, aspect_ratios))
                             for stride, size in zip(strides, sizes)]

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        """Anchors [sum_l A * h_l * w_l, 4] per image (exclusive boxes, network-input pixels)."""
        grid_sizes = [list(feature.shape[-2:]) for feature in feature_maps]
        self.set_cell_anchors(feature_maps[0].dtype, feature_maps[0].device)
        # The configured strides: torchvision infers padded_size // grid, which is 60, not 64, on P6
        # whenever the P5 grid is odd.
        anchors = torch.cat(self.grid_anchors(grid_sizes, [[s, s] for s in self.strides]))
        return [anchors] * len(image_list.image_sizes)


class SGBLevelMapper(LevelMapper):
    """FPN level of each box as maskrcnn-benchmark: area with +1 widths, eps inside the log."""

    def __call__(self, boxlists: list[Tensor]) -> Tensor:
        boxes = torch.cat(boxlists)  # inclusive boxes
        scale = torch.sqrt((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1))
        levels = torch.floor(self.lvl0 + torch.log2(scale / self.s0 + self.eps))
        return levels.clamp(self.k_min, self.k_max).to(torch.int64) - self.k_min


class SGBRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN (head, matching, sampling, losses) with SGB's proposal selection and anchor filter.

    Proposals per level: the ``pre_nms_top_n`` best anchors, decoded, clipped, NMS, the first
    ``post_nms_top_n``; then the ``fpn_post_nms_top_n`` best over all levels of each image. torchvision
    instead caps only after joining the levels and drops boxes narrower than 1e-3; SGB's
    remove_small_boxes with MIN_SIZE 0 keeps every clipped box (widths are >= 1 with the +1), so it is
    left out. In training, anchors reaching ``straddle_thresh`` pixels beyond the image are ignored.
    """

    def __init__(self, *args, fpn_post_nms_top_n: dict[str, int], straddle_thresh: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._fpn_post_nms_top_n = fpn_post_nms_top_n
        self.straddle_thresh = straddle_thresh

    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]) -> tuple[list[Tensor], list[Tensor]]:
        """Decoded proposals [B, A, 4] and logits [B * A, 1] -> per image boxes [P, 4] and scores [P]."""
        objectness = objectness.detach().reshape(len(proposals), -1)
        top_n = self._fpn_post_nms_top_n["training" if self.training else "testing"]
        final_boxes, final_scores = [], []
        for boxes, logits, size in zip(proposals, objectness, image_shapes):
            levels = [self._select_in_level(b, s, size) for b, s in
                      zip(boxes.split(num_anchors_per_level), logits.split(num_anchors_per_level))]
            boxes, scores = torch.cat([b for b, _ in levels]), torch.cat([s for _, s in levels])
            scores, keep = scores.topk(min(top_n, len(scores)))  # per image (FPN_POST_NMS_PER_BATCH False)
            final_boxes.append(boxes[keep])
            final_scores.append(scores)
        return final_boxes, final_scores

    def _select_in_level(self, boxes: Tensor, logits: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        scores, index = logits.sigmoid().topk(min(self.pre_nms_top_n(), len(logits)))  # top-n on probabilities
        boxes = clip_exclusive(boxes[index], size)
        keep = nms(boxes, scores, self.nms_thresh)[: self.post_nms_top_n()]  # exclusive boxes: +1 IoU
        return boxes[keep], scores[keep]

    def assign_targets_to_anchors(self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
                                  ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's labels, with -1 (ignored) on anchors not inside ``target["image_size"]`` (h, w)."""
        labels, matched_boxes = super().assign_targets_to_anchors(anchors, targets)
        margin = self.straddle_thresh
        for labels_in_image, boxes, target in zip(labels, anchors, targets):
            height, width = (float(v) for v in target["image_size"])
            inside = ((boxes[:, 0] >= -margin) & (boxes[:, 1] >= -margin)
                      & (boxes[:, 2] - 1 < width + margin) & (boxes[:, 3] - 1 < height + margin))
            labels_in_image[~inside] = -1.0
        return labels, matched_boxes


def sgb_box_loss(class_logits: Tensor, box_regression: Tensor, labels: list[Tensor],
                 regression_targets: list[Tensor], beta: float) -> tuple[Tensor, Tensor]:
    """Cross-entropy over sampled boxes [R, C] and smooth L1 (``beta``) of the true class's deltas
    [R, 4C], summed over positives and divided by R (SGB's FastRCNNLossComputation)."""
    labels_all, targets = torch.cat(labels), torch.cat(regression_targets)
    loss_classifier = F.cross_entropy(class_logits, labels_all)
    positive = torch.where(labels_all > 0)[0]
    deltas = box_regression.reshape(len(labels_all), -1, 4)[positive, labels_all[positive]]
    loss_box = F.smooth_l1_loss(deltas, targets[positive], beta=beta, reduction="sum") / labels_all.numel()
    return loss_classifier, loss_box


def _class_nms(boxes: Tensor, probs: Tensor, config: SGBDetectorConfig) -> tuple[Tensor, Tensor]:
    """Boxes [N, C, 4] (exclusive) and probabilities [N, C] -> kept (proposal index, class) pairs [K], [K]."""
    candidates = probs > config.score_thresh
    candidates[:, 0] = False
    proposal, label = candidates.nonzero(as_tuple=True)
    kept = torch.zeros_like(candidates)
    for cls in label.unique().tolist():  # SGB's loop over classes; batched_nms's coordinate offsets would
        index = proposal[label == cls]    # round coordinates in float32
        keep = nms(boxes[index, cls], probs[index, cls], config.nms)[: config.post_nms_per_class]
        kept[index[keep], cls] = True
    if config.nms_filter_duplicates:  # the best kept class of each proposal (Neural Motifs)
        best, label = (probs * kept).max(dim=1)
        proposal = best.nonzero().squeeze(1)
        label = label[proposal]
    else:  # ordered by proposal, then class (SGB: by class, then score)
        proposal, label = kept.nonzero(as_tuple=True)
    scores = probs[proposal, label]
    if len(scores) > config.detections_per_img > 0:
        threshold = scores.kthvalue(len(scores) - config.detections_per_img + 1).values
        keep = scores >= threshold  # ties at the threshold are all kept, as in SGB
        proposal, label = proposal[keep], label[keep]
    return proposal, label


class SGBRoIHeads(RoIHeads):
    """torchvision's box head training samples (matching, sampling, box encoding) with SGB's loss betas,
    ground-truth proposals only when configured, and SGB's post-processing."""

    def __init__(self, config: SGBDetectorConfig):
        pool = MultiScaleRoIAlign(list(FEATURE_NAMES), config.pooler_resolution, config.pooler_sampling_ratio)
        # Fixed scales and SGB's level mapping (canonical box 224 at P4); RoIAlign is aligned=False, the
        # legacy RoIAlign of maskrcnn-benchmark.
        pool.scales = list(config.pooler_scales)
        levels = [-math.log2(scale) for scale in config.pooler_scales]
        pool.map_levels = SGBLevelMapper(int(levels[0]), int(levels[-1]))
        channels = config.fpn_channels * config.pooler_resolution**2
        super().__init__(pool, TwoMLPHead(channels, config.mlp_dim),
                         FastRCNNPredictor(config.mlp_dim, config.num_classes), config.roi_fg_iou,
                         config.roi_bg_iou, config.roi_batch_size_per_image, config.roi_positive_fraction,
                         config.bbox_reg_weights, config.score_thresh, config.nms, config.detections_per_img)
        self.config = config
        for fc in (self.box_head.fc6, self.box_head.fc7):  # maskrcnn-benchmark's make_fc initialisation
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.box_predictor.cls_score.weight, std=0.01)
        nn.init.normal_(self.box_predictor.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.box_predictor.cls_score.bias)
        nn.init.zeros_(self.box_predictor.bbox_pred.bias)

    def add_gt_proposals(self, proposals: list[Tensor], gt_boxes: list[Tensor]) -> list[Tensor]:
        return super().add_gt_proposals(proposals, gt_boxes) if self.config.add_gt_proposals else proposals

    def box_features(self, features: dict[str, Tensor], boxes: list[Tensor],
                     image_shapes: list[tuple[int, int]]) -> Tensor:
        """Exclusive boxes [N_i, 4] (network-input pixels) -> fc7 features [sum N_i, mlp_dim]."""
        pooled = self.box_roi_pool(features, [to_inclusive(b) for b in boxes], image_shapes)
        return self.box_head(pooled)

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None = None) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Training: ([], ``loss_classifier``, ``loss_box_reg``); eval: per-image detections, {}."""
        if self.training:
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
            class_logits, box_regression = self.box_predictor(self.box_features(features, proposals, image_shapes))
            losses = sgb_box_loss(class_logits, box_regression, labels, regression_targets,
                                  self.config.box_loss_beta)
            return [], dict(zip(("loss_classifier", "loss_box_reg"), losses))
        box_features = self.box_features(features, proposals, image_shapes)
        class_logits, box_regression = self.box_predictor(box_features)
        boxes = self.box_coder.decode(box_regression, proposals)  # [sum N_i, C, 4]
        counts = [len(p) for p in proposals]
        parts = zip(boxes.split(counts), class_logits.split(counts), box_features.split(counts), image_shapes)
        return [self._detect(*part) for part in parts], {}

    def _detect(self, boxes: Tensor, logits: Tensor, box_features: Tensor, size: tuple[int, int]
                ) -> dict[str, Tensor]:
        boxes = clip_exclusive(boxes, size)
        probs = F.softmax(logits, -1)
        proposal, label = _class_nms(boxes, probs, self.config)
        return {"boxes": boxes[proposal, label], "scores": probs[proposal, label], "labels": label,
                "class_logits": logits[proposal], "box_features": box_features[proposal],
                "boxes_per_class": boxes[proposal]}


def build_sgb_backbone(config: SGBDetectorConfig) -> BackboneWithFPN:
    """ResNeXt body (frozen batch norm without eps, as maskrcnn-benchmark's) + FPN P2-P6 (P6: max pool).

    FPN top-down: torchvision upsamples to the lateral's size, maskrcnn-benchmark by a factor 2; the same
    here because the padded input is a multiple of 32.
    """
    body = ResNet(Bottleneck, list(config.blocks), groups=config.groups, width_per_group=config.width_per_group,
                  norm_layer=partial(FrozenBatchNorm2d, eps=0.0))
    frozen = ("conv1", "layer1", "layer2", "layer3", "layer4")[: config.freeze_at]  # stem, then stages
    for name, parameter in body.named_parameters():
        if name.split(".")[0] in frozen:
            parameter.requires_grad_(False)
    return BackboneWithFPN(body, {f"layer{i + 1}": name for i, name in enumerate(FEATURE_NAMES)},
                           [256, 512, 1024, 2048], config.fpn_channels)


def build_sgb_rpn(config: SGBDetectorConfig) -> SGBRegionProposalNetwork:
    """SGB's RPN: anchors, one shared 3x3 conv head (256 channels), selection and training settings."""
    anchors = SGBAnchorGenerator(config.anchor_sizes, config.aspect_ratios, config.anchor_strides)
    head = RPNHead(config.fpn_channels, anchors.num_anchors_per_location()[0])
    rpn = SGBRegionProposalNetwork(
        anchors, head, config.rpn_fg_iou, config.rpn_bg_iou, config.rpn_batch_size_per_image,
        config.rpn_positive_fraction, {"training": config.pre_nms_top_n_train, "testing": config.pre_nms_top_n_test},
        {"training": config.post_nms_top_n_train, "testing": config.post_nms_top_n_test}, config.rpn_nms,
        fpn_post_nms_top_n={"training": config.fpn_post_nms_top_n_train,
                            "testing": config.fpn_post_nms_top_n_test},
        straddle_thresh=config.straddle_thresh)
    return rpn  # its loss: BCE + smooth L1 with beta 1/9 over the sampled anchors, as SGB's RPNLossComputation


class SGBFasterRCNN(nn.Module):
    """SGB's Faster R-CNN: ResNeXt-FPN backbone, RPN and a 2-fc box head with class-specific boxes.

    Args:
        config: the detector settings (``SGBDetectorConfig()``, ``SGB_RELATION_STAGE`` or smaller ones).
    """

    def __init__(self, config: SGBDetectorConfig | None = None):
        super().__init__()
        self.config = config = config or SGBDetectorConfig()
        self.normalizer = ImageNormalizer(config.pixel_mean, config.pixel_std, "BGR", config.size_divisibility)
        self.backbone = build_sgb_backbone(config)
        self.rpn = build_sgb_rpn(config)
        self.roi_heads = SGBRoIHeads(config)

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Images [3, H_i, W_i] (RGB, 0-255) -> losses (training) or detections per image (eval).

        Training needs ``targets``: ``boxes`` [N_i, 4] (inclusive input pixels), ``labels`` [N_i] in
        1..150; returns ``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``.
        Eval returns per image ``boxes`` [K, 4] (inclusive input pixels), ``scores`` [K], ``labels`` [K]
        (1..150), ``class_logits`` [K, 151], ``box_features`` [K, mlp_dim] (fc7, after ReLU) and
        ``boxes_per_class`` [K, 151, 4], K <= ``detections_per_img``.
        """
        batch, sizes, scales = self._prepare(images)
        features = self.backbone(batch)
        image_list = ImageList(batch, sizes)
        if self.training:
            if targets is None:
                raise ValueError("training needs targets")
            internal = [self._target(t, s, size) for t, s, size in zip(targets, scales, sizes)]
            proposals, rpn_losses = self.rpn(image_list, features, internal)
            _, box_losses = self.roi_heads(features, proposals, sizes, internal)
            return {**rpn_losses, **box_losses}
        proposals, _ = self.rpn(image_list, features)
        detections, _ = self.roi_heads(features, proposals, sizes)
        return [self._to_input(d, s) for d, s in zip(detections, scales)]

    def predict_on_boxes(self, images: Sequence[Tensor], boxes: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """The box head on given boxes (PredCls/SGCls): boxes [N_i, 4] (inclusive input pixels) -> per image
        ``box_features`` [N_i, mlp_dim] and ``class_logits`` [N_i, 151]."""
        batch, sizes, scales = self._prepare(images)
        features = self.backbone(batch)
        scaled = [to_exclusive(b.to(batch) * s) for b, s in zip(boxes, scales)]
        box_features = self.roi_heads.box_features(features, scaled, sizes)
        class_logits, _ = self.roi_heads.box_predictor(box_features)
        counts = [len(b) for b in boxes]
        return [{"box_features": f, "class_logits": c}
                for f, c in zip(box_features.split(counts), class_logits.split(counts))]

    def _prepare(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]], list[Tensor]]:
        """Resize each image as SGB, normalise and pad -> batch [B, 3, H, W], network sizes (h, w) and
        the factors [4] (x, y, x, y) from input pixels to network pixels."""
        resized, scales = [], []
        for image in images:
            height, width = image.shape[-2:]
            new = sgb_resize_size(height, width, self.config.min_size, self.config.max_size)
            # PIL's bilinear resize of the uint8 image in SGB; here torch's antialiased bilinear, rounded
            # back to integers (at most one grey level apart from PIL in our checks)
            image = image.to(self.normalizer.pixel_mean.device, torch.float32)
            resized.append(F.interpolate(image[None], size=new, mode="bilinear", align_corners=False,
                                         antialias=True)[0].round().clamp(0, 255))
            scales.append(torch.tensor([new[1] / width, new[0] / height] * 2, device=image.device))
        batch, sizes = self.normalizer(resized)
        return batch, sizes, scales

    @staticmethod
    def _target(target: dict[str, Tensor], scale: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
        boxes = to_exclusive(target["boxes"].to(scale) * scale)  # BoxList.resize scales the inclusive corners
        return {"boxes": boxes, "labels": target["labels"].to(scale.device, torch.int64),
                "image_size": torch.tensor(size)}

    @staticmethod
    def _to_input(detections: dict[str, Tensor], scale: Tensor) -> dict[str, Tensor]:
        """Boxes back to inclusive input pixels, as SGB's BoxList.resize to the original image size."""
        back = 1.0 / scale  # SGB multiplies by original / resized size: the same up to float rounding
        return {**detections, "boxes": to_inclusive(detections["boxes"]) * back,
                "boxes_per_class": to_inclusive(detections["boxes_per_class"]) * back}
