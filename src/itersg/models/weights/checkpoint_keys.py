"""Load the reference weights into this project's models without detectron2 and without unsafe pickles.

Three kinds of files, each with an explicit key map to this project's state-dict names:

* IterativeSG ``.pth`` (detectron2 ``{"model": state_dict, ...}`` of ``IterativeRelationDetr``; names
  from ubc-vision/IterativeSG ``modeling/``: ``detr.transformer.decoder.subject_layers.0...``);
* DETR ``.pth`` of the VG pretraining (``Detr`` meta-architecture: ``detr.transformer.decoder.layers...``),
  loaded into ``DETR`` or, by decoder replication, into ``IterativeSG``;
* MSRA ``R-101.pkl``: a pickle of numpy arrays with Caffe2 names (``res2_0_branch2a_w``), renamed
  by detectron2's ``c2_model_loading.convert_basic_c2_names`` rules, loaded into the ResNet.

``.pth`` files are read with ``torch.load(weights_only=True)``; ``.pkl`` files with an unpickler
that only rebuilds numpy arrays. Any key the map cannot place, any model key left without a value
(other than the parts a format does not contain) and any shape mismatch raises UserError.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from itersg.errors import UserError
from itersg.models.weights.replicate import replicate_decoder

_BRANCHES = ("subject", "object", "relation")
_D = "detr.transformer.decoder."

# (reference prefix, this project's prefix); the longest matching prefix wins.
ITERATIVESG_PREFIXES: tuple[tuple[str, str], ...] = (
    ("detr.backbone.0.backbone.", "backbone."),
    ("detr.input_proj.", "input_proj."),
    ("detr.query_embed.", "subject_query_embed."),
    ("detr.object_query_embed.", "object_query_embed."),
    ("detr.relation_query_embed.", "relation_query_embed."),
    ("detr.transformer.object_embed.", "class_embed."),
    ("detr.transformer.object_bbox_coords.", "bbox_embed."),
    ("detr.transformer.relation_embed.", "rel_class_embed."),
    ("detr.transformer.encoder.", "transformer.encoder."),
    (_D + "subject_norm.", "transformer.decoder.entity_norm."),
    (_D + "relation_norm.", "transformer.decoder.relation_norm."),
    (_D + "object_pos_attn.", "transformer.decoder.object_query_attn."),
    (_D + "object_pos_linear.", "transformer.decoder.object_query_proj."),
    (_D + "relation_pos_attn.", "transformer.decoder.relation_query_attn."),
    (_D + "relation_pos_linear.", "transformer.decoder.relation_query_proj."),
    *((_D + f"{b}_layers.", f"transformer.decoder.{b}_layers.") for b in _BRANCHES),
    *((_D + f"{b}_graph_query_attn.", f"transformer.decoder.{b}_graph_attn.") for b in _BRANCHES),
    *((_D + f"{b}_graph_query_residual.", f"transformer.decoder.{b}_graph_proj.") for b in _BRANCHES),
    *((_D + f"{b}_graph_query_norm.", f"transformer.decoder.{b}_graph_norm.") for b in _BRANCHES),
)
DETR_PREFIXES: tuple[tuple[str, str], ...] = (
    ("detr.backbone.0.backbone.", "backbone."),
    ("detr.input_proj.", "input_proj."),
    ("detr.query_embed.", "query_embed."),
    ("detr.class_embed.", "class_embed."),
    ("detr.bbox_embed.", "bbox_embed."),
    ("detr.transformer.encoder.", "transformer.encoder."),
    (_D + "layers.", "transformer.decoder.layers."),
    (_D + "norm.", "transformer.decoder.norm."),
)
# Reference entries that are not model weights: the criterion's class-weight buffers.
IGNORED_REFERENCE_PREFIXES = ("criterion.",)


@dataclass(frozen=True)
class LoadReport:
    """What a load did: the file's format, how many tensors it set, what it skipped or left alone."""

    source_format: str
    loaded: int
    ignored: tuple[str, ...] = ()
    initialised: tuple[str, ...] = ()


def rename(state_dict: Mapping[str, Tensor], prefixes: Iterable[tuple[str, str]]) -> tuple[dict, list[str]]:
    """Apply a prefix table; returns the renamed dict and the keys no prefix matched."""
    table = sorted(prefixes, key=lambda pair: -len(pair[0]))
    renamed, unmatched = {}, []
    for key, value in state_dict.items():
        match = next(((old, new) for old, new in table if key.startswith(old)), None)
        if match is None:
            unmatched.append(key)
        else:
            renamed[match[1] + key[len(match[0]):]] = value
    return renamed, unmatched


def _swap(prefixes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(new, old) for old, new in prefixes]


def is_bn_counter(key: str) -> bool:
    """BatchNorm's step counter: state, not a weight; files and models may have it or not (FrozenBN)."""
    return key.endswith("num_batches_tracked")


def _without_ignored(state_dict: Mapping[str, Tensor]) -> tuple[dict, list[str]]:
    kept = {k: v for k, v in state_dict.items() if not k.startswith(IGNORED_REFERENCE_PREFIXES)}
    return kept, sorted(set(state_dict) - set(kept))


def _convert(state_dict: Mapping[str, Tensor], prefixes: Iterable[tuple[str, str]], what: str) -> dict:
    renamed, unmatched = rename(state_dict, prefixes)
    if unmatched:
        raise UserError(f"{what}: {len(unmatched)} key(s) have no place in the model, e.g. {unmatched[:3]}; "
                        "is this a checkpoint of another model?")
    return renamed


def iterativesg_from_reference(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Reference ``IterativeRelationDetr`` state dict -> ``IterativeSG`` names (criterion buffers dropped)."""
    return _convert(_without_ignored(state_dict)[0], ITERATIVESG_PREFIXES, "IterativeSG checkpoint")


def iterativesg_to_reference(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``IterativeSG`` state dict -> reference names (for comparing with the reference code)."""
    return _convert(state_dict, _swap(ITERATIVESG_PREFIXES), "IterativeSG state dict")


def detr_from_reference(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Reference ``Detr`` state dict -> ``DETR`` names (criterion buffers dropped)."""
    return _convert(_without_ignored(state_dict)[0], DETR_PREFIXES, "DETR checkpoint")


def detr_to_reference(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return _convert(state_dict, _swap(DETR_PREFIXES), "DETR state dict")


# --- Caffe2 / MSRA names (detectron2 convert_basic_c2_names, restricted to ResNet backbones) ---------------

_C2_BLOCK = re.compile(r"^res(\d)_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b|bn_rm|bn_riv)$")
_C2_CONV = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
_C2_PARAM = {"w": "weight", "bn_s": "norm.weight", "bn_b": "norm.bias", "bn_rm": "norm.running_mean",
             "bn_riv": "norm.running_var"}
_C2_STEM = {"conv1_w": "stem.conv1.weight", "res_conv1_bn_s": "stem.conv1.norm.weight",
            "res_conv1_bn_b": "stem.conv1.norm.bias", "res_conv1_bn_rm": "stem.conv1.norm.running_mean",
            "res_conv1_bn_riv": "stem.conv1.norm.running_var"}
_C2_IGNORED = re.compile(r"(_momentum$|^fc1000_)")  # solver state and the ImageNet classifier
FROZEN_BN_EPS = 1e-5


def c2_resnet_key(name: str) -> str | None:
    """A Caffe2 ResNet blob name -> this project's ResNet key; None if the name is not a ResNet weight."""
    if name in _C2_STEM:
        return _C2_STEM[name]
    match = _C2_BLOCK.match(name)
    if match is None:
        return None
    stage, block, branch, param = match.groups()
    return f"res{stage}.{block}.{_C2_CONV[branch]}.{_C2_PARAM[param]}"


def resnet_from_c2(blobs: Mapping[str, np.ndarray], source: str = "Caffe2 weights") -> tuple[dict[str, Tensor],
                                                                                          list[str]]:
    """Caffe2 blobs -> ResNet state dict (running statistics filled so each FrozenBN is its affine part).

    Returns the state dict and the ignored blob names; raises UserError for unknown names.
    """
    state, ignored, unknown = {}, [], []
    for name, array in blobs.items():
        if _C2_IGNORED.search(name):
            ignored.append(name)
            continue
        key = c2_resnet_key(name)
        if key is None:
            unknown.append(name)
        else:
            state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if unknown:
        raise UserError(f"{source}: {len(unknown)} Caffe2 blob(s) are not ResNet weights, e.g. {sorted(unknown)[:3]}; "
                        "expected an MSRA ImageNet ResNet such as R-101.pkl")
    for key in [k for k in state if k.endswith(".norm.weight")]:
        base = key[: -len("weight")]
        state.setdefault(base + "running_mean", torch.zeros_like(state[key]))
        state.setdefault(base + "running_var", torch.full_like(state[key], 1.0 - FROZEN_BN_EPS))
    return state, sorted(ignored)


# --- Safe reading -----------------------------------------------------------------------------------------

_NUMPY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"), ("_codecs", "encode"),
}


_NUMPY_MAJOR = int(np.__version__.split(".")[0])


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds dicts of numpy arrays and refuses every other global (no code runs)."""

    def find_class(self, module: str, name: str):
        canonical = module.replace("numpy.core.", "numpy._core.")  # numpy 1 pickles say numpy.core
        if (canonical, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        importable = canonical if _NUMPY_MAJOR >= 2 else canonical.replace("numpy._core.", "numpy.core.")
        return super().find_class(importable, name)


def read_c2_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """The blobs of a Caffe2/detectron2 ``.pkl`` (``{"blobs": ...}``, ``{"model": ...}`` or flat)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = NumpyOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise UserError(f"{path}: no such weights file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{path}: not a safe pickle of numpy arrays ({err}); "
                        "use the MSRA R-101.pkl") from None
    for wrapper in ("model", "blobs"):
        if isinstance(data, Mapping) and isinstance(data.get(wrapper), Mapping):
            data = data[wrapper]
    if not isinstance(data, Mapping) or not all(isinstance(v, np.ndarray) for v in data.values()):
        raise UserError(f"{path}: expected a mapping of names to numpy arrays")
    return dict(data)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict of a ``.pth`` (``{"model": ...}`` or bare) or of a ``.pkl`` of numpy arrays (read with
    the numpy-only unpickler), ``module.`` prefixes removed."""
    path = Path(path)
    if path.suffix == ".pkl":
        return {k.removeprefix("module."): torch.as_tensor(v) for k, v in read_c2_pickle(path).items()}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; give the checkpoint file (.pth) inside it") from None
    except OSError:
        raise  # no permission, a failing disk: the command line names the file
    except Exception:  # whatever torch raises on other content: a text file, a cut-off download, refused objects
        # A complete torch.save file is a zip archive: then the content was refused, else the file is not one.
        reason = ("it holds objects other than tensors and plain containers, which are not loaded for safety"
                  if zipfile.is_zipfile(path) else "it is not a (complete) PyTorch checkpoint file")
        raise UserError(f"{path}: not a usable checkpoint: {reason}; pass a checkpoint written by "
                        "itersg or the released weights") from None
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise UserError(f"{path}: expected a state dict (or {{'model': state_dict}}) of tensors")
    if not data:
        raise UserError(f"{path}: holds no weights (an empty state dict); pass a checkpoint written by itersg "
                        "or the released weights")
    return {k.removeprefix("module."): v for k, v in data.items()}


def detect_format(keys: Iterable[str], source: str = "checkpoint") -> str:
    """One of iterativesg-reference, detr-reference, iterativesg, detr, msra; UserError naming ``source``
    otherwise."""
    keys = list(keys)
    markers = (("iterativesg-reference", _D + "subject_layers."), ("detr-reference", _D + "layers."),
               ("iterativesg", "transformer.decoder.subject_layers."),
               ("detr", "transformer.decoder.layers."))
    for name, marker in markers:
        if any(k.startswith(marker) for k in keys):
            return name
    if any(c2_resnet_key(k) is not None for k in keys):
        return "msra"
    raise UserError(f"{source}: unrecognised checkpoint: none of its {len(keys)} keys (e.g. {keys[:3]}) belong to "
                    "IterativeSG, DETR or an MSRA ResNet; pass a checkpoint written by itersg or the released weights")


# --- Loading into models ----------------------------------------------------------------------------------


_DEC = "transformer.decoder."
# The parts of IterativeSG / DETR state dicts: a file must fill every part it has a key of.
MODEL_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("backbone", ("backbone.",)),
    ("input projection", ("input_proj.",)),
    ("encoder", ("transformer.encoder.",)),
    ("decoders", tuple(_DEC + p for p in ("subject_layers.", "object_layers.", "relation_layers.",
                                          "entity_norm.", "relation_norm.", "layers.", "norm."))),
    ("conditioning", tuple(_DEC + p for p in ("object_query_", "relation_query_", "subject_graph_",
                                              "object_graph_", "relation_graph_"))),
    ("queries", ("subject_query_embed.", "object_query_embed.", "relation_query_embed.", "query_embed.")),
    ("entity heads", ("class_embed.", "bbox_embed.")),
    ("predicate head", ("rel_class_embed.",)),
    ("auxiliary head", ("aux_head.",)),
)


def model_part(key: str) -> str:
    """The part of the model a state-dict key belongs to (``MODEL_PARTS``), or "other"."""
    return next((part for part, prefixes in MODEL_PARTS if key.startswith(prefixes)), "other")


def key_problems(unexpected: list[str], missing: list[str],
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> list[str]:
    """The problems of a weight file against a model, one phrase each (empty if none): every loader of
    this package reports them in these words. ``mismatched``: (key, shape in the file, shape in the model)."""
    problems = []
    if unexpected:
        problems.append(f"unexpected keys {len(unexpected)} (e.g. {unexpected[:3]})")
    if missing:
        problems.append(f"missing keys {len(missing)} (e.g. {missing[:3]})")
    if mismatched:
        key, file_shape, model_shape = mismatched[0]
        problems.append(f"shape mismatches {len(mismatched)} (e.g. {key}: file {file_shape}, model {model_shape})")
    return problems


def load_checked(model: nn.Module, state: Mapping[str, Tensor], source: str, *, prefix: str = "",
                 may_stay: Iterable[str] = ()) -> tuple[str, ...]:
    """Load ``state`` (names relative to ``prefix``) into ``model`` after checking names and shapes.

    Every model key under ``prefix`` must receive a value unless it is listed in ``may_stay`` or is a
    BatchNorm counter. Returns the model keys (counters excepted) left at their current values.
    """
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    state = {prefix + k: v for k, v in state.items() if not is_bn_counter(k) or prefix + k in own}
    may_stay = {*may_stay, *filter(is_bn_counter, own)}
    unexpected = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state) - set(may_stay))
    mismatched = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    problems = key_problems(unexpected, missing,
                            [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in mismatched])
    if problems:
        raise UserError(f"{source}: does not fit the model: {'; '.join(problems)}; check the variant and "
                        "model.overrides match the checkpoint")
    model.load_state_dict(state, strict=False)
    return tuple(sorted(k for k in set(own) - set(state) if not is_bn_counter(k)))


def load_msra_resnet(backbone: nn.Module, path: str | Path, *, prefix: str = "") -> LoadReport:
    """Load MSRA ``R-101.pkl`` into a ``ResNet`` (``prefix="backbone."`` for a whole model)."""
    state, ignored = resnet_from_c2(read_c2_pickle(path), str(path))
    load_checked(backbone, state, str(path), prefix=prefix)
    return LoadReport("msra", len(state), tuple(ignored))


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Load any supported weights file into an ``IterativeSG``, a ``DETR``, an ``EGTR`` or its
    ``DeformableDETR`` (``egtr_keys``: official EGTR checkpoints and this project's).

    IterativeSG takes IterativeSG checkpoints, DETR checkpoints (decoder replication; the
    conditioning layers and the predicate head keep their initialisation) and MSRA ResNets (backbone
    only); DETR takes DETR checkpoints and MSRA ResNets. Every model part (``MODEL_PARTS``) the file
    has a key of must be complete; parts it lacks entirely keep their values and are listed in the
    report's ``initialised``.
    """
    from itersg.models.detectors.deformable_detr import DeformableDETR
    from itersg.models.relation.egtr_model import EGTR
    from itersg.models.weights.egtr_keys import load_egtr, load_egtr_detector

    path = Path(path)
    if isinstance(model, EGTR):
        return load_egtr(model, path)
    if isinstance(model, DeformableDETR):
        return load_egtr_detector(model, path)
    if path.suffix == ".pkl":
        return load_msra_resnet(model, path, prefix="backbone.")
    return load_state(model, read_state_dict(path), str(path))


def _without_multiplied_queries(state: dict[str, Tensor], fresh: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the file's relation queries where the model has more of them (SpeaQ: 600, the file: 300).

    SpeaQ starts from the same initial weights as IterativeSG (the VG-pretrained DETR, or IterativeSG
    weights made from it by decoder replication); detectron2's checkpointer skips a weight whose shape
    differs, so SpeaQ's relation queries keep their fresh initialisation. Every other shape mismatch
    stays an error.
    """
    key = "relation_query_embed.weight"
    if key in state and key in fresh and state[key].shape[1:] == fresh[key].shape[1:] \
            and len(fresh[key]) > len(state[key]):
        return {k: v for k, v in state.items() if k != key}
    return state


def check_finite(state: Mapping[str, Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinite values: every output of a model made from them is garbage."""
    non_finite = [name for name, tensor in state.items()
                  if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if non_finite:
        raise UserError(f"{source}: {len(non_finite)} weight tensors hold NaN or infinite values (first: "
                        f"{non_finite[0]}); the training diverged: use an earlier checkpoint")


def load_state(model: nn.Module, state: Mapping[str, Tensor], source: str) -> LoadReport:
    """``load_weights`` for a state dict already read from ``source`` (a ``.pth``); refuses non-finite weights."""
    source_format = detect_format(state, source)
    check_finite(state, source)
    if source_format == "msra":
        raise UserError(f"{source}: Caffe2 ResNet weights must be a .pkl file")
    ignored = _without_ignored(state)[1] if source_format.endswith("reference") else []
    is_iterativesg = hasattr(model, "rel_class_embed")
    if source_format == "iterativesg-reference":
        state = iterativesg_from_reference(state)
    elif source_format == "detr-reference":
        state = detr_from_reference(state)
    if source_format.startswith("iterativesg") and not is_iterativesg:
        raise UserError(f"{source}: an IterativeSG checkpoint cannot initialise a plain DETR")
    if source_format.startswith("detr") and is_iterativesg:
        fresh = model.state_dict()
        try:
            replicated = replicate_decoder(state)
        except KeyError as err:
            raise UserError(f"{source}: {err.args[0]}") from None
        replicated = _without_multiplied_queries(replicated, fresh)
        load_checked(model, {**fresh, **replicated}, source)
        kept = tuple(sorted(k for k in set(fresh) - set(replicated) if not is_bn_counter(k)))
        return LoadReport(source_format, len(replicated), tuple(ignored), kept)
    present = {model_part(k) for k in state}
    absent = [k for k in model.state_dict() if model_part(k) not in present]
    if is_iterativesg:
        fewer = _without_multiplied_queries(dict(state), model.state_dict())
        absent += sorted(set(state) - set(fewer))
        state = fewer
    initialised = load_checked(model, state, source, may_stay=absent)
    return LoadReport(source_format, len(state), tuple(ignored), initialised)
