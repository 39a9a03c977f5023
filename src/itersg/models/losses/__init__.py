"""Matching and training losses: Hungarian matchers, the IterativeSG/DETR criteria and SpeaQ's.

``targets.py`` (dataset targets -> matching targets), ``matcher.py``, ``criterion.py`` (DETR's
``SetCriterion``, IterativeSG's ``TripletCriterion``), SpeaQ's grouped one-to-many matching
(``speaq.py`` on ``query_groups.py`` and ``one_to_many.py``) and ``build.py`` (``build_criterion``,
which picks among them; only it imports both ``criterion.py`` and ``speaq.py``).

May import: ``itersg.models.config`` and other loss modules; they read model outputs as dicts of
tensors and import no network module (backbones, detectors, relation), weights or the registry.
"""
