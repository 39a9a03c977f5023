"""Models of itersg: backbones, IterativeSG, DETR, matching, losses, post-processing, checkpoint maps.

Entry points: ``build_model`` / ``build_detr`` (registry of the seven variants, their SpeaQ versions and
SpeaQ's baseline), ``build_criterion``,
``postprocess_scene_graphs``, ``load_weights`` and ``replicate_decoder``.
"""

from itersg.models.checkpoint_keys import load_weights
from itersg.models.criterion import build_criterion
from itersg.models.postprocess import postprocess_detections, postprocess_scene_graphs
from itersg.models.registry import VARIANTS, build_detr, build_model, count_parameters
from itersg.models.replicate import replicate_decoder

__all__ = [
    "VARIANTS", "build_criterion", "build_detr", "build_model", "count_parameters", "load_weights",
    "postprocess_detections", "postprocess_scene_graphs", "replicate_decoder",
]
