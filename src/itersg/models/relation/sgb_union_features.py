"""The shared feature parts of Scene-Graph-Benchmark's relation head (KaihuaTang/Scene-Graph-Benchmark.pytorch, "SGB").

SGB's ``ROIRelationHead`` (``relation_head.py``) owns two feature extractors besides the detector's:

* ``box_feature_extractor``: a copy of the detector's box feature extractor (one FPN level per box,
  RoIAlign 7x7, fc6/fc7 to 4096), initialised from the detector and trained with the relation model
  while the detector's own box head stays frozen: ``SGBBoxFeatureExtractor``.
* ``union_feature_extractor`` (``RelationFeatureExtractor`` in ``roi_relation_feature_extractors.py``):
  the union box of each (subject, object) pair is RoIAligned (7x7, sampling ratio 2) from EVERY FPN
  level P2-P5, the four maps are concatenated (4 x 256 channels) and reduced by a 3x3 conv + ReLU
  (``Pooler(cat_all_levels=True).reduce_channel``); the "rect" branch turns the two boxes into 27x27
  binary masks in the frame of the whole image and through ``rect_conv`` (conv 2->128 7x7/2 + ReLU + BN,
  max pool 3/2, conv 128->256 3x3 + ReLU + BN) into a 256x7x7 map that is added to the pooled union
  map; fc6/fc7 (+ ReLU each) give a 4096-d vector per pair: ``SGBUnionFeatureExtractor``.

What is initialised from the detector (SGB's ``load_mapping`` in ``tools/relation_train_net.py``): fc6
and fc7 of both extractors. ``reduce_channel`` (Kaiming normal, fan out) and ``rect_conv`` (PyTorch's
default initialisation) have no counterpart in the detector and start random. Everything here is
trained; SGB freezes only the backbone, the RPN and the detector's own box head.

Conventions: boxes are x1, y1, x2, y2 in network-input pixels (the image after SGB's resize, before
padding) in maskrcnn-benchmark's inclusive convention (width = x2 - x1 + 1), what SGB's BoxLists hold
inside the model; image sizes are (height, width) of the resized image, unpadded. Module names follow
SGB's (``feature_extractor.pooler.reduce_channel.0``, ``feature_extractor.fc6``, ``rect_conv.0`` ...),
so SGB's checkpoints map by prefix only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from itersg.models.detectors.faster_rcnn import SGBDetectorConfig, SGBFasterRCNN

RECT_SIZE = 27  # 4 * POOLER_RESOLUTION - 1
Features = Mapping[str, Tensor] | Sequence[Tensor]


# --- pairs and their geometry ---------------------------------------------------------------------------

def all_ordered_pairs(num_boxes: int, device: torch.device | str | None = None) -> Tensor:
    """Every ordered pair (i, j), i != j, of ``num_boxes`` boxes -> [N (N - 1), 2] int64, subject-major
    ((0, 1), (0, 2), ..., (1, 0), (1, 2), ...), the order of SGB's ``nonzero(ones - eye)``."""
    candidates = ~torch.eye(num_boxes, dtype=torch.bool, device=device)
    return candidates.nonzero()


def union_boxes(boxes: Tensor, pairs: Tensor) -> Tensor:
    """Boxes [N, 4] and pairs [R, 2] (subject, object indices) -> the smallest box holding both [R, 4]
    (SGB's ``boxlist_union``; the same in the inclusive and the exclusive convention)."""
    subject, obj = boxes[pairs[:, 0]], boxes[pairs[:, 1]]
    return torch.cat((torch.minimum(subject[:, :2], obj[:, :2]), torch.maximum(subject[:, 2:], obj[:, 2:])), dim=1)


def box_masks(boxes: Tensor, image_size: tuple[int, int], size: int = RECT_SIZE) -> Tensor:
    """Inclusive boxes [R, 4] (image pixels) -> binary masks [R, size, size] (rows y, columns x).

    As SGB: the box is scaled by size / width and size / height of the whole image (BoxList.resize,
    not +1 aware) and cell (y, x) is set when floor(x1) <= x <= ceil(x2) and floor(y1) <= y <= ceil(y2).
    """
    height, width = image_size
    x1, x2 = (boxes[:, 0::2] * (float(size) / float(width))).unbind(1)
    y1, y2 = (boxes[:, 1::2] * (float(size) / float(height))).unbind(1)
    grid = torch.arange(size, device=boxes.device)
    in_x = (grid >= x1.floor().long()[:, None]) & (grid <= x2.ceil().long()[:, None])  # [R, size]
    in_y = (grid >= y1.floor().long()[:, None]) & (grid <= y2.ceil().long()[:, None])
    return in_y[:, :, None] & in_x[:, None, :]


def rect_masks(boxes: Tensor, pairs: Tensor, image_size: tuple[int, int], size: int = RECT_SIZE) -> Tensor:
    """Boxes [N, 4] (inclusive image pixels), pairs [R, 2] -> float masks [R, 2, size, size]: channel 0
    the subject's box, channel 1 the object's, in the frame of the whole image (SGB's rect inputs)."""
    masks = (box_masks(boxes[pairs[:, i]], image_size, size) for i in (0, 1))
    return torch.stack(tuple(masks), dim=1).float()


# --- modules ------------------------------------------------------------------------------------------------

def _levels(features: Features, count: int) -> list[Tensor]:
    """The first ``count`` FPN maps (P2, P3, ...) of the backbone's ordered dict or a list."""
    maps = list(features.values()) if isinstance(features, Mapping) else list(features)
    return maps[:count]


def _rois(boxes: Sequence[Tensor]) -> Tensor:
    """Boxes per image [N_i, 4] -> RoIs [sum N_i, 5] (image index, x1, y1, x2, y2)."""
    return torch.cat([torch.cat((b.new_full((len(b), 1), i), b), dim=1) for i, b in enumerate(boxes)])


class AllLevelsPooler(nn.Module):
    """RoIAlign of every box from each FPN level, concatenated over levels and reduced by a 3x3 conv + ReLU
    (maskrcnn-benchmark's ``Pooler`` with ``cat_all_levels=True``; legacy RoIAlign, aligned=False)."""

    def __init__(self, in_channels: int, resolution: int, scales: Sequence[float], sampling_ratio: int):
        super().__init__()
        self.resolution, self.scales, self.sampling_ratio = resolution, tuple(scales), sampling_ratio
        conv = nn.Conv2d(in_channels * len(self.scales), in_channels, kernel_size=3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # make_conv3x3
        nn.init.zeros_(conv.bias)
        self.reduce_channel = nn.Sequential(conv, nn.ReLU(inplace=True))

    def forward(self, features: Features, boxes: Sequence[Tensor]) -> Tensor:
        """Features (P2.. maps [B, C, H_l, W_l]), inclusive boxes per image [N_i, 4] (network pixels)
        -> [sum N_i, C, resolution, resolution]."""
        rois = _rois(boxes)
        pooled = [roi_align(level, rois.to(level), self.resolution, scale, self.sampling_ratio, aligned=False)
                  for level, scale in zip(_levels(features, len(self.scales)), self.scales)]
        return self.reduce_channel(torch.cat(pooled, dim=1))


class UnionBoxHead(nn.Module):
    """SGB's ``union_feature_extractor.feature_extractor``: the all-levels pooler and the 2-fc MLP."""

    def __init__(self, in_channels: int, resolution: int, scales: Sequence[float], sampling_ratio: int,
                 mlp_dim: int):
        super().__init__()
        self.pooler = AllLevelsPooler(in_channels, resolution, scales, sampling_ratio)
        self.fc6 = nn.Linear(in_channels * resolution**2, mlp_dim)
        self.fc7 = nn.Linear(mlp_dim, mlp_dim)
        for fc in (self.fc6, self.fc7):  # make_fc; replaced by the detector's fc6/fc7 in SGB
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)

    def forward_without_pool(self, x: Tensor) -> Tensor:
        """Pooled maps [R, C, r, r] -> ReLU(fc7(ReLU(fc6(flatten)))) [R, mlp_dim]."""
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


def make_rect_conv(in_channels: int, bn_momentum: float = 0.01) -> nn.Sequential:
    """SGB's ``rect_conv``: [R, 2, 27, 27] masks -> [R, in_channels, 7, 7] (ReLU before each BN, as SGB)."""
    half = in_channels // 2
    return nn.Sequential(
        nn.Conv2d(2, half, kernel_size=7, stride=2, padding=3), nn.ReLU(inplace=True),
        nn.BatchNorm2d(half, momentum=bn_momentum), nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        nn.Conv2d(half, in_channels, kernel_size=3, stride=1, padding=1), nn.ReLU(inplace=True),
        nn.BatchNorm2d(in_channels, momentum=bn_momentum))


class SGBUnionFeatureExtractor(nn.Module):
    """SGB's ``RelationFeatureExtractor`` (POOLING_ALL_LEVELS True, no attributes, SEPARATE_SPATIAL False).

    Args:
        in_channels: FPN channels C (256).
        mlp_dim: fc6/fc7 width (ROI_BOX_HEAD.MLP_HEAD_DIM 4096).
        resolution: RoIAlign output size (7); the masks are 4 * resolution - 1 = 27 wide.
        scales: one RoIAlign scale per pooled FPN level (P2-P5: 1/4 .. 1/32).
        sampling_ratio: RoIAlign sampling points per bin side (2).
        bn_momentum: momentum of rect_conv's batch norms (0.01).
    """

    def __init__(self, in_channels: int = 256, mlp_dim: int = 4096, resolution: int = 7,
                 scales: Sequence[float] = (0.25, 0.125, 0.0625, 0.03125), sampling_ratio: int = 2,
                 bn_momentum: float = 0.01):
        super().__init__()
        self.rect_size = 4 * resolution - 1
        self.feature_extractor = UnionBoxHead(in_channels, resolution, scales, sampling_ratio, mlp_dim)
        self.rect_conv = make_rect_conv(in_channels, bn_momentum)

    @classmethod
    def from_detector(cls, detector: SGBFasterRCNN) -> SGBUnionFeatureExtractor:
        """Sized as the detector's config, fc6/fc7 copied from its box head (SGB's load_mapping)."""
        config: SGBDetectorConfig = detector.config
        module = cls(config.fpn_channels, config.mlp_dim, config.pooler_resolution, config.pooler_scales,
                     config.pooler_sampling_ratio)
        module.load_box_head(detector.roi_heads.box_head)
        return module.to(next(detector.parameters()).device)

    def load_box_head(self, box_head: nn.Module) -> None:
        """Copy fc6 and fc7 from a box head (torchvision ``TwoMLPHead`` or anything with ``fc6``/``fc7``)."""
        for name in ("fc6", "fc7"):
            getattr(self.feature_extractor, name).load_state_dict(getattr(box_head, name).state_dict())

    def forward(self, features: Features, boxes: Sequence[Tensor], pairs: Sequence[Tensor],
                image_sizes: Sequence[tuple[int, int]]) -> Tensor:
        """Union features of each image's pairs.

        Args:
            features: FPN maps [B, C, H_l, W_l] from P2 on (the backbone's ordered dict; P6 unused).
            boxes: per image [N_i, 4], inclusive network-input pixels.
            pairs: per image [R_i, 2] (subject, object) indices into ``boxes[i]``.
            image_sizes: per image (height, width) of the resized, unpadded network input.

        Returns:
            [sum R_i, mlp_dim] (after fc7's ReLU), images in order.
        """
        unions = [union_boxes(b, p) for b, p in zip(boxes, pairs)]
        rects = torch.cat([rect_masks(b, p, s, self.rect_size) for b, p, s in zip(boxes, pairs, image_sizes)])
        visual = self.feature_extractor.pooler(features, unions)
        return self.feature_extractor.forward_without_pool(visual + self.rect_conv(rects.to(visual)))


class SGBBoxFeatureExtractor(nn.Module):
    """SGB's ``ROIRelationHead.box_feature_extractor``: a trainable copy of the detector's box feature
    extractor (one FPN level per box, RoIAlign 7x7, fc6/fc7), initialised from the detector.

    Args:
        detector: the (frozen) detector whose ``roi_heads.box_roi_pool`` and ``box_head`` are copied.
    """

    def __init__(self, detector: SGBFasterRCNN):
        super().__init__()
        self.box_roi_pool = copy.deepcopy(detector.roi_heads.box_roi_pool)
        self.box_head = copy.deepcopy(detector.roi_heads.box_head)
        for parameter in self.box_head.parameters():
            parameter.requires_grad_(True)

    def forward(self, features: Mapping[str, Tensor], boxes: Sequence[Tensor],
                image_sizes: Sequence[tuple[int, int]]) -> Tensor:
        """Backbone features (dict), inclusive network-input boxes per image [N_i, 4], sizes (h, w)
        -> fc7 features [sum N_i, mlp_dim] (after ReLU)."""
        pooled = self.box_roi_pool(dict(features), list(boxes), list(image_sizes))
        return self.box_head(pooled)
