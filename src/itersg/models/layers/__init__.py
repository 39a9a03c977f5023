"""Building blocks shared by the detectors and the relation models.

``mlp.py`` (DETR's box-head MLP), ``position_encoding.py`` (DETR's 2-D sine encoding) and
``preprocess.py`` (image normalisation and batching, feature padding masks).

May import: torch / torchvision only; nothing else of ``itersg.models``.
"""
