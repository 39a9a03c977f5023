"""FCOS detection head and its training loss, configured as centermask2's ``modeling/fcos``.

Head: separate classification and box towers of ``num_convs`` 3x3 convs + GroupNorm(32) + ReLU shared
by all levels, a 3x3 classifier (sigmoid, prior 0.01), a 3x3 box regressor giving the distances
(left, top, right, bottom) from a location to the box sides in units of the level stride (ReLU, with
a learned scale per level) and a 3x3 centerness logit on the box tower. 150 classes: 5,082,016
parameters.

Training targets (``MODEL.FCOS`` defaults of centermask2): a location is positive for a box if it
lies in the box's centre region (``POS_RADIUS`` 1.5 strides around the centre, clipped to the box)
and the largest of its four distances is within its level's range (P3 0-64, P4 64-128, P5 128-256,
P6 256-512, P7 >512 pixels); among several boxes the smallest one wins. Losses, named as centermask2
logs them: ``loss_fcos_cls`` sigmoid focal loss (alpha 0.25, gamma 2) over all locations and classes /
number of positives; ``loss_fcos_loc`` the GIoU loss of positives (``LOC_LOSS_TYPE: giou``) weighted by
their centerness target / sum of centerness targets; ``loss_fcos_ctr`` centerness BCE / number of
positives. Both normalisers are averaged over processes when torch.distributed is running, as
centermask2 does.

The GIoU loss is centermask2's ``IOULoss`` (``fcos_box_loss``), not torchvision's: it works on the
(left, top, right, bottom) distances in stride units and smooths the IoU by one unit, (I + 1) / (U + 1),
which moves the loss by a few percent against the plain GIoU. Not reproduced: centermask2's
``get_sample_region`` returns no positives for an image whose first box has its centre at x = 0 exactly
(a zero-width box on the left border); here such an image gets its positives like any other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

INF = 1e8
SIZES_OF_INTEREST = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, INF))
CENTER_SAMPLING_RADIUS = 1.5
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


class Scale(nn.Module):
    """Multiply by one learned scalar (one per pyramid level for the box regression)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init_value]))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(channels: int, num_convs: int) -> nn.Sequential:
    # 32 groups as centermask2; narrow demo towers keep >= 2 channels per group so 1x1 levels normalise
    groups = math.gcd(32, max(channels // 2, 1))
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.GroupNorm(groups, channels),
                   nn.ReLU()]
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Per-level FCOS predictions from pyramid features of ``in_channels`` channels."""

    def __init__(self, in_channels: int, num_classes: int, num_convs: int = 4, num_levels: int = 5,
                 prior_prob: float = 0.01):
        super().__init__()
        self.num_classes = num_classes
        self.cls_tower = _tower(in_channels, num_convs)
        self.bbox_tower = _tower(in_channels, num_convs)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, kernel_size=3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, kernel_size=3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(num_levels))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Levels [B, C, h_l, w_l] -> class logits [B, K, h_l, w_l], distances [B, 4, h_l, w_l] (>= 0,
        in strides), centerness logits [B, 1, h_l, w_l], one list entry per level."""
        logits, ltrb, centerness = [], [], []
        for level, feature in enumerate(features):
            box_feature = self.bbox_tower(feature)
            logits.append(self.cls_logits(self.cls_tower(feature)))
            ltrb.append(F.relu(self.scales[level](self.bbox_pred(box_feature))))
            centerness.append(self.centerness(box_feature))
        return logits, ltrb, centerness


def level_locations(height: int, width: int, stride: int, device: torch.device | None = None) -> Tensor:
    """Image coordinates (x, y) [h * w, 2] of the feature cells of one level: ``stride * i + stride // 2``."""
    xs = torch.arange(width, dtype=torch.float32, device=device) * stride + stride // 2
    ys = torch.arange(height, dtype=torch.float32, device=device) * stride + stride // 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


def fcos_targets(locations: Sequence[Tensor], strides: Sequence[int], boxes: Tensor, labels: Tensor,
                 num_classes: int, radius: float = CENTER_SAMPLING_RADIUS,
                 sizes_of_interest: Sequence[tuple[float, float]] = SIZES_OF_INTEREST
                 ) -> tuple[Tensor, Tensor]:
    """Assign one image's boxes to the locations of all levels.

    Args:
        locations: per level, (x, y) pixels [n_l, 2]; ``strides`` and ``sizes_of_interest`` per level.
        boxes: [N, 4] xyxy pixels; labels: [N] in 0..num_classes-1.

    Returns:
        labels [L] (``num_classes`` = background) and distances (l, t, r, b) [L, 4] in units of the
        location's stride, L = sum of n_l.
    """
    points = torch.cat(list(locations))
    counts = [len(loc) for loc in locations]
    stride = torch.cat([points.new_full((n,), float(s)) for n, s in zip(counts, strides)])
    size_range = torch.cat([points.new_tensor(r).expand(n, 2) for n, r in zip(counts, sizes_of_interest)])
    if len(boxes) == 0:
        return labels.new_full((len(points),), num_classes), points.new_zeros(len(points), 4)
    x, y = points[:, 0, None], points[:, 1, None]  # [L, 1]
    x1, y1, x2, y2 = boxes.unbind(dim=1)  # [N] each
    ltrb = torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=2)  # [L, N, 4]
    # centre sampling: a box of +-radius strides around the box centre, clipped to the box
    cx, cy, reach = (x1 + x2) / 2, (y1 + y2) / 2, stride[:, None] * radius
    region = torch.stack([torch.maximum(cx - reach, x1), torch.maximum(cy - reach, y1),
                          torch.minimum(cx + reach, x2), torch.minimum(cy + reach, y2)], dim=2)
    inside = torch.stack([x - region[..., 0], y - region[..., 1], region[..., 2] - x,
                          region[..., 3] - y], dim=2).amin(dim=2) > 0
    largest = ltrb.amax(dim=2)
    in_range = (largest >= size_range[:, :1]) & (largest <= size_range[:, 1:])
    area = ((x2 - x1) * (y2 - y1)).expand(len(points), -1).clone()
    area[~(inside & in_range)] = INF
    min_area, box_index = area.min(dim=1)
    assigned = labels[box_index].clone()
    assigned[min_area == INF] = num_classes
    return assigned, ltrb[torch.arange(len(points)), box_index] / stride[:, None]


def centerness_targets(ltrb: Tensor) -> Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) for positive distances [P, 4] -> [P]."""
    left_right, top_bottom = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    horizontal = left_right.amin(dim=1) / left_right.amax(dim=1)
    vertical = top_bottom.amin(dim=1) / top_bottom.amax(dim=1)
    return torch.sqrt(horizontal * vertical)


def fcos_box_loss(box_pred: Tensor, reg_targets: Tensor) -> Tensor:
    """centermask2's ``loss_fcos_loc`` for the positive locations of a batch (before averaging over processes).

    Args:
        box_pred, reg_targets: [P, 4] predicted and target (left, top, right, bottom) distances from each
            positive location to its box sides, in units of the level stride.

    Returns:
        sum over positives of (1 - GIoU) x centerness target, divided by the sum of the centerness
        targets (at least 1e-6; its mean over processes under torch.distributed). The IoU is smoothed:
        (intersection + 1) / (union + 1), areas in squared stride units.
    """
    ctr_target = centerness_targets(reg_targets)
    norm = max(_mean_over_processes(ctr_target.sum()), 1e-6)
    pred_area = (box_pred[:, 0] + box_pred[:, 2]) * (box_pred[:, 1] + box_pred[:, 3])
    target_area = (reg_targets[:, 0] + reg_targets[:, 2]) * (reg_targets[:, 1] + reg_targets[:, 3])
    inner, outer = torch.minimum(box_pred, reg_targets), torch.maximum(box_pred, reg_targets)
    intersection = (inner[:, 0] + inner[:, 2]) * (inner[:, 1] + inner[:, 3])
    enclosing = (outer[:, 0] + outer[:, 2]) * (outer[:, 1] + outer[:, 3])
    union = pred_area + target_area - intersection
    giou = (intersection + 1.0) / (union + 1.0) - (enclosing - union) / enclosing
    return ((1 - giou) * ctr_target).sum() / norm


def _mean_over_processes(value: Tensor) -> float:
    if dist.is_available() and dist.is_initialized():
        value = value.detach().clone()
        dist.all_reduce(value)
        return value.item() / dist.get_world_size()
    return value.item()


def _flatten_levels(per_level: Sequence[Tensor]) -> Tensor:
    """[B, C, h_l, w_l] per level -> [B, sum h_l w_l, C], level-major, row-major within a level."""
    return torch.cat([x.flatten(2).transpose(1, 2) for x in per_level], dim=1)


def fcos_losses(logits: Sequence[Tensor], ltrb: Sequence[Tensor], centerness: Sequence[Tensor],
                locations: Sequence[Tensor], strides: Sequence[int], targets: Sequence[dict[str, Tensor]],
                num_classes: int) -> dict[str, Tensor]:
    """The three FCOS losses for a batch; ``targets`` are contract target dicts (``boxes``, ``labels``)."""
    assigned = [fcos_targets(locations, strides, t["boxes"].to(locations[0]), t["labels"].to(
        locations[0].device), num_classes) for t in targets]
    labels = torch.stack([a[0] for a in assigned])  # [B, L]
    reg_targets = torch.stack([a[1] for a in assigned])  # [B, L, 4]
    cls_pred = _flatten_levels(logits).float()  # [B, L, K]
    box_pred = _flatten_levels(ltrb).float()  # [B, L, 4]
    ctr_pred = _flatten_levels(centerness).float()[..., 0]  # [B, L]

    positive = labels != num_classes
    num_positive = max(_mean_over_processes(positive.sum().float()), 1.0)
    class_target = F.one_hot(labels, num_classes + 1)[..., :num_classes].to(cls_pred.dtype)
    loss_cls = sigmoid_focal_loss(cls_pred, class_target, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA,
                                  reduction="sum") / num_positive

    box_pred, reg_targets, ctr_pred = box_pred[positive], reg_targets[positive], ctr_pred[positive]
    loss_loc = fcos_box_loss(box_pred, reg_targets)
    loss_ctr = F.binary_cross_entropy_with_logits(ctr_pred, centerness_targets(reg_targets),
                                                  reduction="sum") / num_positive
    return {"loss_fcos_cls": loss_cls, "loss_fcos_loc": loss_loc, "loss_fcos_ctr": loss_ctr}
