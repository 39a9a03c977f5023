"""Checkpoint key maps and weight initialisation: reference IterativeSG/DETR ``.pth``, MSRA ``R-101.pkl``,
timm/centermask2 VoVNet files, and DETR -> IterativeSG decoder replication.

``checkpoint_keys.py`` (``load_weights``), ``vovnet_weights.py``, ``replicate.py``. Every file format
a model can start from gets its key map here.

May import: any network module (``backbones``, ``detectors``, ``relation``), ``config`` and ``layers``;
not losses or the registry.
"""
