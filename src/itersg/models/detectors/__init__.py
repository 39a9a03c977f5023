"""Object detectors and detection heads: DETR and its transformer, the CenterMask heads (FCOS, SAG-Mask,
MaskIoU).

``detr.py``, ``transformer.py`` (DETR's encoder/decoder layers, reused by ``relation``),
``centermask.py``, ``fcos.py`` (head and its own loss), ``mask_heads.py``. New detectors (Deformable
DETR, Faster R-CNN) go here.

May import: ``itersg.models.config``, ``layers``, ``backbones`` and other detector modules; not
relation, losses, weights or the registry.
"""
