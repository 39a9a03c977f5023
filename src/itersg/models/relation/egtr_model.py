"""EGTR: a Deformable DETR whose decoder self-attention is read as the scene graph (Im et al., CVPR 2024).

The reference's ``DetrForSceneGraphGeneration`` as two parts: ``detector`` (``DeformableDETR``: backbone,
deformable encoder and decoder, class and box heads) and ``relation`` (``EGTRRelationHead``: the
per-layer query/key projections, the gated sum, the predicate, connectivity and frequency-bias parts).
``itersg.models.weights.egtr_keys`` maps the reference's checkpoint names onto these two prefixes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from itersg.models.detectors.deformable_detr import DeformableDETR
from itersg.models.relation.egtr import EGTRRelationHead


class EGTR(nn.Module):
    """Deformable DETR + EGTR's relation head.

    Args:
        detector: the object detector (its ``forward`` returns the decoder's queries and keys).
        relation: the relation head, sized like the detector's decoder.
    """

    def __init__(self, detector: DeformableDETR, relation: EGTRRelationHead):
        super().__init__()
        self.detector = detector
        self.relation = relation

    @property
    def backbone(self) -> nn.Module:
        return self.detector.backbone

    slow_parameter = staticmethod(DeformableDETR.slow_parameter)

    @staticmethod
    def new_parameter(name: str) -> bool:
        """Trained at the new parameters' learning rate: the relation head (what the pretrained detector
        does not hold, the reference's ``initialized_keys``)."""
        return name.startswith("relation.")

    def forward(self, images: Sequence[Tensor]) -> dict:
        """Images [3, H_i, W_i] (RGB, 0-255) -> the detector's outputs (``pred_logits`` [B, N, C] sigmoid
        logits, ``pred_boxes`` [B, N, 4] normalised cx, cy, w, h, ``aux_outputs``, ...) plus ``pred_rel``
        [B, N, N, P] and ``pred_connectivity`` [B, N, N, 1] logits (subject query i, object query j)."""
        outputs = self.detector(images)
        return {**outputs, **self.relation(outputs)}

    def parameter_parts(self) -> dict[str, int]:
        """What EGTR adds to its detector: the trainable relation-extraction parameters and the frozen
        frequency tables (the reference counts both in its 42.5 M)."""
        relation = list(self.relation.parameters())
        return {"relation_additions": sum(p.numel() for p in relation if p.requires_grad),
                "frequency_table": sum(p.numel() for p in relation if not p.requires_grad)}
