"""Scene-graph (relation) models built on a detector's transformer: IterativeSG.

``iterativesg.py`` (the model) and ``iterative_decoder.py`` (its three interacting decoders). New
one-stage relation decoders and relation heads (EGTR's head, a relation stage) go here.

May import: ``itersg.models.config``, ``layers``, ``backbones`` and ``detectors``; not losses,
weights or the registry.
"""
