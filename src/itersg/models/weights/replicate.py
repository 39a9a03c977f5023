"""Decoder replication: initialise IterativeSG from a (VG-pretrained) DETR.

The DETR decoder layers are copied into the subject, object and relation decoders; its final
LayerNorm into ``entity_norm`` and ``relation_norm``; its query embedding into the three query
embeddings; its class and box heads into the shared entity heads. Backbone, input projection and
encoder carry over. The zero-initialised conditioning layers, the graph LayerNorms and the predicate
head keep their fresh initialisation, so right after replication each decoder computes exactly what
the DETR decoder computes.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from itersg.models.relation.iterative_decoder import BRANCHES

# DETR prefix -> IterativeSG prefixes that receive a copy (state-dict names of this project).
REPLICATION = {
    "transformer.decoder.layers.": tuple(f"transformer.decoder.{b}_layers." for b in BRANCHES),
    "transformer.decoder.norm.": ("transformer.decoder.entity_norm.", "transformer.decoder.relation_norm."),
    "query_embed.": ("subject_query_embed.", "object_query_embed.", "relation_query_embed."),
    "class_embed.": ("class_embed.",),
    "bbox_embed.": ("bbox_embed.",),
    "backbone.": ("backbone.",),
    "input_proj.": ("input_proj.",),
    "transformer.encoder.": ("transformer.encoder.",),
}


def replicate_decoder(detr_state_dict: Mapping[str, Tensor],
                      template: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Map a DETR state dict (this project's names) to an IterativeSG state dict.

    Args:
        detr_state_dict: ``DETR.state_dict()`` (convert reference checkpoints with
            ``checkpoint_keys.detr_from_reference``).
        template: an ``IterativeSG.state_dict()`` supplying what DETR lacks (conditioning layers,
            graph norms, predicate head); without it only the replicated entries are returned.

    Raises:
        KeyError: a DETR entry that no rule maps (a state dict of another model).
    """
    result = {k: v.clone() for k, v in (template or {}).items()}
    for key, value in detr_state_dict.items():
        prefix = next((p for p in REPLICATION if key.startswith(p)), None)
        if prefix is None:
            raise KeyError(f"DETR state dict entry {key!r} has no place in IterativeSG")
        for target in REPLICATION[prefix]:
            result[target + key[len(prefix):]] = value.clone()
    return result
