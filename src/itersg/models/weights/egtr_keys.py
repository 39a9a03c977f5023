"""EGTR / HF Deformable DETR checkpoint names <-> ``DeformableDETR`` names (the detector part of EGTR).

Official names (naver-ai/egtr ``model/deformable_detr.py`` and ``model/egtr.py``):

* ``DetrForSceneGraphGeneration`` and ``DeformableDetrForObjectDetection`` hold the ``DeformableDetrModel`` as
  ``model.``: ``model.backbone.conv_encoder.model.<timm ResNet name>`` (the position embedding has no
  weights), ``model.input_proj.<level>.<0 conv | 1 GroupNorm>``, ``model.encoder.layers.<i>.*``,
  ``model.decoder.layers.<i>.*``, ``model.query_position_embeddings``, ``model.level_embed``,
  ``model.reference_points``; below those prefixes the names equal this project's.
* The heads sit on the top-level module as ``nn.ModuleList``s holding one shared module once per decoder layer
  (no box refinement): ``class_embed.<i>.*`` and ``bbox_embed.<i>.layers.<j>.*``, i = 0..decoder_layers-1, the
  same tensor under every i. Names without the index (``class_embed.weight``) are accepted too.
* PyTorch Lightning checkpoints (``train_egtr.py``, ``pretrain_detr.py``) wrap the state dict as
  ``{"state_dict": ...}`` with one more ``model.`` in front of every key.
* EGTR's relation head (``proj_q``, ``proj_k``, ``final_sub_proj``, ``final_obj_proj``, ``rel_predictor_gate``,
  ``rel_predictor``, ``connectivity_layer``, ``triplet_dist``, ``rel_dist``) is not the detector's: such keys
  are reported as ignored.

Imports ``itersg.models.weights.checkpoint_keys`` (the project's key report) and ``itersg.errors``, as the
package's other loaders do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from itersg.errors import UserError
from itersg.models.weights.checkpoint_keys import LoadReport, check_finite, load_checked

# (official prefix, this project's prefix); an exact key is matched by its full name.
DETECTOR_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.backbone.conv_encoder.model.", "backbone.body."),
    ("model.input_proj.", "input_proj."),
    ("model.encoder.", "encoder."),
    ("model.decoder.", "decoder."),
    ("model.query_position_embeddings.", "query_position_embeddings."),
    ("model.reference_points.", "reference_points."),
    ("model.level_embed", "level_embed"),
)
SHARED_HEADS = ("class_embed", "bbox_embed")
_HEAD_KEY = re.compile(r"^(class_embed|bbox_embed)\.(?:\d+\.)?(.+)$")
RELATION_HEAD_PREFIXES = ("proj_q.", "proj_k.", "final_sub_proj.", "final_obj_proj.", "rel_predictor_gate.",
                          "rel_predictor.", "connectivity_layer.", "triplet_dist", "rel_dist")
LIGHTNING_PREFIX = "model."


def detector_key(official: str) -> str | None:
    """An official key -> this project's ``DeformableDETR`` key; None if it is no detector key."""
    match = _HEAD_KEY.match(official)
    if match:
        return f"{match[1]}.{match[2]}"
    for old, new in DETECTOR_PREFIXES:
        if official == old or (old.endswith(".") and official.startswith(old)):
            return new + official[len(old):]
    return None


def official_keys(key: str, decoder_layers: int = 6) -> list[str]:
    """This project's key -> the official key(s): one per decoder layer for the shared heads."""
    head = key.split(".", 1)[0]
    if head in SHARED_HEADS:
        return [f"{head}.{i}.{key.split('.', 1)[1]}" for i in range(decoder_layers)]
    for old, new in DETECTOR_PREFIXES:
        if key == new or (new.endswith(".") and key.startswith(new)):
            return [old + key[len(new):]]
    raise KeyError(f"{key!r} is not a DeformableDETR key")


def detector_to_official(state_dict: Mapping[str, Tensor], decoder_layers: int = 6) -> dict[str, Tensor]:
    """A ``DeformableDETR`` state dict under the official names (``DetrForSceneGraphGeneration`` layout)."""
    return {name: value for key, value in state_dict.items() for name in official_keys(key, decoder_layers)}


def without_lightning_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the LightningModule's ``model.`` when the keys carry it (``model.model.backbone...``)."""
    if not any(k.startswith(LIGHTNING_PREFIX + "model.") for k in state_dict):
        return dict(state_dict)
    return {k.removeprefix(LIGHTNING_PREFIX): v for k, v in state_dict.items()}


def detector_from_official(state_dict: Mapping[str, Tensor],
                           source: str = "EGTR checkpoint") -> tuple[dict[str, Tensor], list[str]]:
    """Official (or Lightning-wrapped) state dict -> (this project's names, the ignored relation-head keys).

    Keys that are neither keep their name, so the loader reports them as unexpected. The copies of a shared
    head must agree; UserError otherwise.
    """
    renamed: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    ignored = []
    for key, value in without_lightning_prefix(state_dict).items():
        if key.startswith(RELATION_HEAD_PREFIXES):
            ignored.append(key)
            continue
        new = detector_key(key) or key
        if new in renamed and not torch.equal(renamed[new], value):
            raise UserError(f"{source}: {key} differs from {origin[new]}, but both are the one shared "
                            f"{new.split('.')[0]} of a detector without box refinement")
        renamed[new], origin[new] = value, key
    return renamed, sorted(ignored)


def read_egtr_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict of an EGTR file: a Lightning ``.ckpt`` (``{"state_dict": ...}``) or a bare state dict,
    read with ``torch.load(weights_only=True)``."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint") from None
    except OSError:
        raise
    except Exception as err:  # refused objects, a truncated or foreign file
        raise UserError(f"{path}: not a readable PyTorch checkpoint of tensors ({type(err).__name__}); pass an "
                        "EGTR .ckpt or a saved state dict") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(wrapper), Mapping):
            data = data[wrapper]
    if not isinstance(data, Mapping) or not data or not all(isinstance(v, Tensor) for v in data.values()):
        raise UserError(f"{path}: expected a non-empty state dict of tensors (or a Lightning checkpoint)")
    return dict(data)


def load_egtr_detector(model: nn.Module, weights: Mapping[str, Tensor] | str | Path,
                       source: str | None = None) -> LoadReport:
    """Load the detector part of an official EGTR / Deformable DETR checkpoint into a ``DeformableDETR``.

    Every model key must receive a value and every file key must have a place (relation-head keys aside),
    with equal shapes; otherwise UserError listing the problems in ``key_problems``' words.
    """
    if isinstance(weights, (str, Path)):
        source = source or str(weights)
        weights = read_egtr_state_dict(weights)
    source = source or "EGTR checkpoint"
    state, ignored = detector_from_official(weights, source)
    check_finite(state, source)
    load_checked(model, state, source)
    return LoadReport("egtr", len(state), tuple(ignored))


def egtr_from_official(state_dict: Mapping[str, Tensor], source: str = "EGTR checkpoint") -> dict[str, Tensor]:
    """A whole official EGTR state dict (or a Deformable DETR one: no relation keys) -> ``EGTR`` names
    (``detector.*``, ``relation.*``); a state dict already in those names is returned as it is."""
    state = without_lightning_prefix(state_dict)
    if any(key.startswith(("detector.", "relation.")) for key in state):
        return dict(state)
    detector, _ = detector_from_official(state, source)
    relation = {key: value for key, value in state.items() if key.startswith(RELATION_HEAD_PREFIXES)}
    return {**{f"detector.{k}": v for k, v in detector.items()}, **{f"relation.{k}": v for k, v in relation.items()}}


def load_egtr(model: nn.Module, weights: Mapping[str, Tensor] | str | Path, source: str | None = None) -> LoadReport:
    """Load an EGTR checkpoint (official ``.ckpt`` or this project's) into an ``EGTR``; a Deformable DETR
    checkpoint (the VG-pretrained detector EGTR starts from) sets the detector and leaves the relation head
    as initialised (reported in ``initialised``). Nothing else may be missing, unexpected or misshapen."""
    if isinstance(weights, (str, Path)):
        source = source or str(weights)
        weights = read_egtr_state_dict(weights)
    source = source or "EGTR checkpoint"
    state = egtr_from_official(weights, source)
    check_finite(state, source)
    if not any(key.startswith("relation.") for key in state):
        load_checked(model, {k.removeprefix("detector."): v for k, v in state.items()}, source, prefix="detector.")
        return LoadReport("egtr-detector", len(state), initialised=("relation",))
    load_checked(model, state, source)
    return LoadReport("egtr", len(state))
