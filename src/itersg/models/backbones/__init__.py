"""Feature extractors: ResNet (detectron2/MSRA layout), VoVNetV2 and the FCOS-style FPN on it.

``resnet.py``, ``vovnet.py``, ``fpn.py``. A backbone exposes the interface that ``detectors`` and
``relation`` read (``out_channels``, the normaliser, ``forward`` -> features); new backbones go here.
Their checkpoint key maps and loaders live in ``itersg.models.weights``.

May import: ``itersg.models.config``, ``itersg.models.layers`` and other backbones; not detectors,
relation, losses, weights or the registry.
"""
