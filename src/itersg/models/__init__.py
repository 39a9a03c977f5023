"""Models of itersg: backbones, IterativeSG, DETR, matching, losses, post-processing, checkpoint maps.

Entry points: ``build_model`` / ``build_detr`` (every variant of ``itersg.catalog``: the published rows,
their P5 and SpeaQ versions, SpeaQ's baseline), ``build_criterion``,
``postprocess_scene_graphs``, ``load_weights`` and ``replicate_decoder``.

Layout (by part, as detectron2's ``modeling/``; each sub-package's docstring says what it may import):

* ``config.py``: the model/loss/matcher settings dataclasses (imports nothing of ``itersg.models``);
* ``layers/``: shared building blocks (MLP, sine position encoding, image normaliser, padding masks);
* ``backbones/``: ResNet, VoVNetV2, FPN;
* ``detectors/``: DETR and its transformer, the CenterMask heads (FCOS, mask heads);
* ``relation/``: scene-graph models on a detector's transformer (IterativeSG and its decoders);
* ``losses/``: targets, Hungarian matchers, criteria (DETR, IterativeSG, SpeaQ), ``build_criterion``;
* ``weights/``: checkpoint key maps and loaders, DETR -> IterativeSG decoder replication;
* ``postprocess.py``: model outputs -> per-image predictions (imports nothing of ``itersg.models``);
* ``registry.py``: variant name -> model (imports config, backbones, detectors, relation).

May import: itersg.errors, itersg.catalog.
"""

from itersg.models.losses.build import build_criterion
from itersg.models.postprocess import postprocess_detections, postprocess_scene_graphs
from itersg.models.registry import VARIANTS, build_detr, build_model, count_parameters
from itersg.models.weights.checkpoint_keys import load_weights
from itersg.models.weights.replicate import replicate_decoder

__all__ = [
    "VARIANTS", "build_criterion", "build_detr", "build_model", "count_parameters", "load_weights",
    "postprocess_detections", "postprocess_scene_graphs", "replicate_decoder",
]
