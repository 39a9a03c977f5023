"""Reference checkpoints (IterativeSG, DETR-VG, MSRA R-101.pkl) land in place; pickled code never runs.

The fixture checkpoints are written here from the reference code's module names (ubc-vision/IterativeSG
``modeling/``, detectron2 ResNet and Caffe2 blob names), with random values.
"""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
import torch

from itersg.errors import UserError
from itersg.models import build_detr, build_model
from itersg.models.backbones.resnet import build_resnet
from itersg.models.config import resnet_config
from itersg.models.weights.checkpoint_keys import (
    c2_resnet_key,
    iterativesg_from_reference,
    iterativesg_to_reference,
    load_msra_resnet,
    load_state,
    load_weights,
    read_c2_pickle,
)

D, FF, Q, CLASSES, PREDICATES, ENC, DEC = 32, 64, 8, 4, 3, 1, 3
OVERRIDES = {"hidden_dim": D, "nheads": 4, "enc_layers": ENC, "dec_layers": DEC, "dim_feedforward": FF,
             "num_queries": Q, "backbone": {"blocks": [1, 2, 1, 1], "width": 8}}
BLOCKS, WIDTH = (1, 2, 1, 1), 8


def detectron2_resnet_shapes(blocks=BLOCKS, width=WIDTH) -> dict[str, tuple]:
    """detectron2 ResNet names (stem.conv1, resN.i.convK/shortcut with .norm buffers) and shapes."""
    shapes = {}

    def conv(name, cin, cout, k):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.norm.{buffer}"] = (cout,)

    conv("stem.conv1", 3, width, 7)
    cin = width
    for s, n in enumerate(blocks):
        mid, cout = width * 2**s, width * 4 * 2**s
        for i in range(n):
            if i == 0:
                conv(f"res{s + 2}.{i}.shortcut", cin, cout, 1)
            conv(f"res{s + 2}.{i}.conv1", cin, mid, 1)
            conv(f"res{s + 2}.{i}.conv2", mid, mid, 3)
            conv(f"res{s + 2}.{i}.conv3", mid, cout, 1)
            cin = cout
    return shapes


def attention(prefix: str, d: int, kdim: int | None = None) -> dict[str, tuple]:
    if kdim is None:
        shapes = {f"{prefix}.in_proj_weight": (3 * d, d)}
    else:
        shapes = {f"{prefix}.q_proj_weight": (d, d), f"{prefix}.k_proj_weight": (d, kdim),
                  f"{prefix}.v_proj_weight": (d, kdim)}
    return {**shapes, f"{prefix}.in_proj_bias": (3 * d,), f"{prefix}.out_proj.weight": (d, d),
            f"{prefix}.out_proj.bias": (d,)}


def linear(prefix: str, cin: int, cout: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (cout, cin), f"{prefix}.bias": (cout,)}


def norm(prefix: str) -> dict[str, tuple]:
    return {f"{prefix}.weight": (D,), f"{prefix}.bias": (D,)}


def encoder_layer(prefix: str) -> dict[str, tuple]:
    return {**attention(f"{prefix}.self_attn", D), **linear(f"{prefix}.linear1", D, FF),
            **linear(f"{prefix}.linear2", FF, D), **norm(f"{prefix}.norm1"), **norm(f"{prefix}.norm2")}


def decoder_layer(prefix: str) -> dict[str, tuple]:
    return {**encoder_layer(prefix), **attention(f"{prefix}.multihead_attn", D), **norm(f"{prefix}.norm3")}


def mlp(prefix: str) -> dict[str, tuple]:
    return {**linear(f"{prefix}.layers.0", D, D), **linear(f"{prefix}.layers.1", D, D),
            **linear(f"{prefix}.layers.2", D, 4)}


def shared_shapes() -> dict[str, tuple]:
    shapes = {f"detr.backbone.0.backbone.{k}": v for k, v in detectron2_resnet_shapes(BLOCKS, WIDTH).items()}
    shapes.update({"detr.input_proj.weight": (D, WIDTH * 32, 1, 1), "detr.input_proj.bias": (D,),
                   "detr.query_embed.weight": (Q, D)})
    for i in range(ENC):
        shapes.update(encoder_layer(f"detr.transformer.encoder.layers.{i}"))
    return shapes


def reference_iterativesg_shapes() -> dict[str, tuple]:
    """``IterativeRelationDetr`` state-dict names (IterativeRelationDETR + IterativeRelationTransformer)."""
    shapes, dec = shared_shapes(), "detr.transformer.decoder"
    shapes.update({"detr.object_query_embed.weight": (Q, D), "detr.relation_query_embed.weight": (Q, D),
                   **linear("detr.transformer.object_embed", D, CLASSES + 1),
                   **mlp("detr.transformer.object_bbox_coords"),
                   **linear("detr.transformer.relation_embed", D, PREDICATES + 1),
                   **norm(f"{dec}.subject_norm"), **norm(f"{dec}.relation_norm")})
    for i in range(DEC):
        for branch in ("subject", "object", "relation"):
            shapes.update(decoder_layer(f"{dec}.{branch}_layers.{i}"))
        shapes.update({**attention(f"{dec}.object_pos_attn.{i}", D),
                       **linear(f"{dec}.object_pos_linear.{i}", D, D),
                       **attention(f"{dec}.relation_pos_attn.{i}", D, 2 * D),
                       **linear(f"{dec}.relation_pos_linear.{i}", D, D)})
    for i in range(DEC - 1):
        for branch in ("subject", "object", "relation"):
            shapes.update({**attention(f"{dec}.{branch}_graph_query_attn.{i}", D, 3 * D),
                           **linear(f"{dec}.{branch}_graph_query_residual.{i}", D, D),
                           **norm(f"{dec}.{branch}_graph_query_norm.{i}")})
    return shapes


def reference_detr_shapes() -> dict[str, tuple]:
    shapes = shared_shapes()
    shapes.update({**linear("detr.class_embed", D, CLASSES + 1), **mlp("detr.bbox_embed"),
                   **norm("detr.transformer.decoder.norm")})
    for i in range(DEC):
        shapes.update(decoder_layer(f"detr.transformer.decoder.layers.{i}"))
    return shapes


def random_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=g) for k, shape in shapes.items()}
    return {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}


def assert_bijection(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    """Every model tensor holds exactly one distinct fixture tensor, and every fixture tensor is used."""
    fingerprints = {(*v.flatten()[:6].tolist(), v.numel()): k for k, v in reference.items()}
    assert len(fingerprints) == len(reference)
    used = set()
    for key, value in model.state_dict().items():
        source = fingerprints.get((*value.flatten()[:6].tolist(), value.numel()))
        assert source is not None, f"{key} was not loaded"
        assert torch.equal(value, reference[source])
        used.add(source)
    assert used == set(reference)


@pytest.fixture
def reference_isg_checkpoint(tmp_path):
    reference = random_state(reference_iterativesg_shapes())
    path = tmp_path / "model_final.pth"
    extras = {"criterion.empty_weight_obj": torch.ones(CLASSES + 1),
              "criterion.empty_rel_weight": torch.ones(PREDICATES + 1)}
    torch.save({"model": {**reference, **extras}, "iteration": 249999, "scheduler": {"last_epoch": 3}}, path)
    return path, reference


def test_reference_iterativesg_checkpoint_lands_in_place(reference_isg_checkpoint):
    path, reference = reference_isg_checkpoint
    model = build_model("r101-detr", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    report = load_weights(model, path)
    assert report.source_format == "iterativesg-reference" and report.initialised == ()
    assert report.ignored == ("criterion.empty_rel_weight", "criterion.empty_weight_obj")
    assert_bijection(model, reference)
    decoder, dec = model.transformer.decoder, "detr.transformer.decoder"
    placements = {
        "detr.query_embed.weight": model.subject_query_embed.weight,
        "detr.relation_query_embed.weight": model.relation_query_embed.weight,
        "detr.transformer.object_embed.weight": model.class_embed.weight,
        "detr.transformer.relation_embed.bias": model.rel_class_embed.bias,
        "detr.transformer.object_bbox_coords.layers.2.weight": model.bbox_embed.layers[2].weight,
        f"{dec}.subject_norm.weight": decoder.entity_norm.weight,
        f"{dec}.object_pos_linear.1.weight": decoder.object_query_proj[1].weight,
        f"{dec}.relation_pos_attn.2.k_proj_weight": decoder.relation_query_attn[2].k_proj_weight,
        f"{dec}.relation_graph_query_residual.0.bias": decoder.relation_graph_proj[0].bias,
        f"{dec}.object_graph_query_norm.1.weight": decoder.object_graph_norm[1].weight,
        f"{dec}.object_layers.2.norm3.bias": decoder.object_layers[2].norm3.bias,
        f"{dec}.relation_layers.1.multihead_attn.in_proj_weight":
            decoder.relation_layers[1].multihead_attn.in_proj_weight,
        "detr.transformer.encoder.layers.0.linear1.bias": model.transformer.encoder.layers[0].linear1.bias,
        "detr.backbone.0.backbone.res3.0.shortcut.norm.running_var":
            model.backbone.res3[0].shortcut.norm.running_var,
        "detr.backbone.0.backbone.stem.conv1.weight": model.backbone.stem.conv1.weight,
    }
    for key, tensor in placements.items():
        assert torch.equal(tensor, reference[key]), key
    with torch.no_grad():
        out = model.eval()([torch.zeros(3, 64, 64, dtype=torch.uint8)])
    assert torch.isfinite(out["pred_rel_logits"]).all()


def test_iterativesg_key_map_round_trips():
    reference = random_state(reference_iterativesg_shapes())
    assert iterativesg_to_reference(iterativesg_from_reference(reference)).keys() == reference.keys()
    model = build_model("r101-detr", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    ours = model.state_dict()
    assert iterativesg_from_reference(iterativesg_to_reference(ours)).keys() == ours.keys()
    assert set(iterativesg_to_reference(ours)) == set(reference)


def test_reference_detr_checkpoint_lands_in_place(tmp_path):
    reference = random_state(reference_detr_shapes(), seed=1)
    path = tmp_path / "detr.pth"
    torch.save({"model": {f"module.{k}": v for k, v in reference.items()}}, path)  # saved from DDP
    detr = build_detr("r101-detr", num_classes=CLASSES, overrides=OVERRIDES)
    assert load_weights(detr, path).source_format == "detr-reference"
    assert_bijection(detr, reference)
    assert torch.equal(detr.transformer.decoder.norm.bias, reference["detr.transformer.decoder.norm.bias"])
    assert torch.equal(detr.bbox_embed.layers[1].bias, reference["detr.bbox_embed.layers.1.bias"])
    isg = build_model("r101-detr", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    with pytest.raises(UserError, match="cannot initialise a plain DETR"):
        torch.save({"model": isg.state_dict()}, tmp_path / "isg.pth")
        load_weights(detr, tmp_path / "isg.pth")


def test_reference_speaq_checkpoint_lands_in_place(tmp_path):
    # SpeaQ's released file has IterativeSG's names; only the relation queries are 2 x Q (MULTIPLY_QUERY 2)
    reference = random_state({**reference_iterativesg_shapes(), "detr.relation_query_embed.weight": (2 * Q, D)})
    extras = {"criterion.empty_weight_obj": torch.ones(CLASSES + 1),
              "criterion.empty_rel_weight": torch.ones(PREDICATES + 1)}
    path = tmp_path / "speaq_model_final.pth"
    torch.save({"model": {**reference, **extras}, "iteration": 149999}, path)
    model = build_model("r101-detr-speaq", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    report = load_weights(model, path)
    assert report.source_format == "iterativesg-reference" and report.initialised == ()
    assert report.ignored == ("criterion.empty_rel_weight", "criterion.empty_weight_obj")
    assert_bijection(model, reference)
    assert torch.equal(model.relation_query_embed.weight, reference["detr.relation_query_embed.weight"])
    plain = build_model("r101-detr", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    with pytest.raises(UserError, match=r"shape mismatches 1 .*relation_query_embed"):
        load_weights(plain, path)


def test_the_released_speaq_file_names_exactly_the_full_size_model(monkeypatch):
    # the fixture's reference names and shapes at the released sizes: R-101, 256 wide, 6 + 6 layers, 300 queries
    sizes = {"D": 256, "FF": 2048, "Q": 300, "CLASSES": 150, "PREDICATES": 50, "ENC": 6, "DEC": 6,
             "BLOCKS": (3, 4, 23, 3), "WIDTH": 64}
    for name, value in sizes.items():
        monkeypatch.setattr(sys.modules[__name__], name, value)
    shapes = {**reference_iterativesg_shapes(), "detr.relation_query_embed.weight": (600, 256),
              "criterion.empty_weight_obj": (151,), "criterion.empty_rel_weight": (51,)}
    assert len(shapes) == 1171
    model = build_model("r101-detr-speaq")
    report = load_state(model, {k: torch.zeros(shape) for k, shape in shapes.items()}, "speaq_model_final.pth")
    assert report.source_format == "iterativesg-reference" and report.initialised == ()  # nothing missing
    assert report.loaded == 1169 and len(report.ignored) == 2  # nothing unexpected: 1,169 weights + 2 buffers
    assert all(not value.any() for key, value in model.state_dict().items() if value.is_floating_point())


def test_speaq_starts_from_detr_with_fresh_relation_queries(tmp_path):
    reference = random_state(reference_detr_shapes(), seed=1)
    torch.save({"model": reference}, tmp_path / "detr.pth")
    torch.manual_seed(0)
    model = build_model("r101-detr-speaq", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    before = model.relation_query_embed.weight.detach().clone()
    report = load_weights(model, tmp_path / "detr.pth")
    assert "relation_query_embed.weight" in report.initialised
    assert torch.equal(model.relation_query_embed.weight, before)
    assert torch.equal(model.subject_query_embed.weight, reference["detr.query_embed.weight"])
    assert torch.equal(model.object_query_embed.weight, reference["detr.query_embed.weight"])
    # the same from IterativeSG weights made by decoder replication (Q relation queries, SpeaQ has 2 Q)
    replicated = build_model("r101-detr", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    load_weights(replicated, tmp_path / "detr.pth")
    torch.save({"model": replicated.state_dict()}, tmp_path / "init.pth")
    report = load_weights(model, tmp_path / "init.pth")
    assert report.initialised == ("relation_query_embed.weight",)
    assert torch.equal(model.relation_query_embed.weight, before)
    # a SpeaQ checkpoint never loads into a model with fewer relation queries
    torch.save({"model": model.state_dict()}, tmp_path / "speaq.pth")
    with pytest.raises(UserError, match="relation_query_embed"):
        load_weights(replicated, tmp_path / "speaq.pth")


def test_incomplete_or_foreign_checkpoints_are_reported(reference_isg_checkpoint, tmp_path):
    path, reference = reference_isg_checkpoint
    model = build_model("r101-detr", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    dropped = ("relation_embed.bias", "subject_layers.2.norm1.weight")
    missing = {k: v for k, v in reference.items() if not k.endswith(dropped)}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(UserError, match=r"missing keys 2 .*rel_class_embed\.bias.*subject_layers\.2\.norm1"):
        load_weights(model, tmp_path / "missing.pth")
    extra = {**reference, "detr.transformer.decoder.extra_layers.0.weight": torch.zeros(1)}
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(UserError, match="no place in the model"):
        load_weights(model, tmp_path / "extra.pth")
    wider = build_model("r101-detr", num_classes=CLASSES + 1, num_predicates=PREDICATES, overrides=OVERRIDES)
    with pytest.raises(UserError, match=r"shape mismatches 2 .*class_embed"):
        load_weights(wider, path)
    torch.save({"model": {"fc.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="unrecognised checkpoint"):
        load_weights(model, tmp_path / "other.pth")
    with pytest.raises(UserError, match="no such checkpoint"):
        load_weights(model, tmp_path / "absent.pth")


def test_parts_a_checkpoint_lacks_keep_their_values(tmp_path):
    """A replicated initialisation saved without the conditioning layers and predicate head still loads."""
    reference = random_state(reference_iterativesg_shapes())
    lacking = ("_pos_attn", "_pos_linear", "_graph_query_", "relation_embed")
    partial = {k: v for k, v in reference.items() if not any(part in k for part in lacking)}
    torch.save({"model": partial}, tmp_path / "init.pth")
    model = build_model("r101-detr", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    before = model.state_dict()
    report = load_weights(model, tmp_path / "init.pth")
    kept = set(report.initialised)
    fresh = ("transformer.decoder.object_query_", "transformer.decoder.relation_query_", "rel_class_embed.")
    assert kept == {k for k in before if k.startswith(fresh) or "_graph_" in k}
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in kept)
    assert torch.equal(model.subject_query_embed.weight, reference["detr.query_embed.weight"])


def c2_blobs(blocks=BLOCKS, width=WIDTH) -> dict[str, np.ndarray]:
    """MSRA Caffe2 blob names: conv weights and folded BN scale/bias, plus classifier and solver state."""
    rng = np.random.default_rng(0)
    blobs = {"conv1_w": rng.standard_normal((width, 3, 7, 7)).astype(np.float32),
             "res_conv1_bn_s": rng.random(width).astype(np.float32) + 0.5,
             "res_conv1_bn_b": rng.standard_normal(width).astype(np.float32)}
    cin = width
    for s, n in enumerate(blocks):
        mid, cout = width * 2**s, width * 4 * 2**s
        for i in range(n):
            branches = {"2a": (mid, cin, 1), "2b": (mid, mid, 3), "2c": (cout, mid, 1)}
            if i == 0:
                branches["1"] = (cout, cin, 1)
            for branch, (o, c, k) in branches.items():
                name = f"res{s + 2}_{i}_branch{branch}"
                blobs[f"{name}_w"] = rng.standard_normal((o, c, k, k)).astype(np.float32)
                blobs[f"{name}_bn_s"] = rng.random(o).astype(np.float32) + 0.5
                blobs[f"{name}_bn_b"] = rng.standard_normal(o).astype(np.float32)
            cin = cout
    blobs["fc1000_w"] = rng.standard_normal((1000, cin)).astype(np.float32)
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    blobs["res2_0_branch2a_w_momentum"] = np.zeros_like(blobs["res2_0_branch2a_w"])
    return blobs


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_msra_pickle_lands_in_the_resnet(tmp_path, protocol):
    blobs = c2_blobs()
    path = tmp_path / "R-101.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=protocol))
    backbone = build_resnet(resnet_config({"blocks": list(BLOCKS), "width": WIDTH}))
    report = load_msra_resnet(backbone, path)
    assert report.ignored == ("fc1000_b", "fc1000_w", "res2_0_branch2a_w_momentum")
    assert np.array_equal(backbone.stem.conv1.weight.detach().numpy(), blobs["conv1_w"])
    assert np.array_equal(backbone.stem.conv1.norm.weight.detach().numpy(), blobs["res_conv1_bn_s"])
    assert np.array_equal(backbone.res2[0].shortcut.weight.detach().numpy(), blobs["res2_0_branch1_w"])
    assert np.array_equal(backbone.res3[1].conv2.norm.bias.detach().numpy(), blobs["res3_1_branch2b_bn_b"])
    assert np.array_equal(backbone.res5[0].conv3.weight.detach().numpy(), blobs["res5_0_branch2c_w"])
    # the folded statistics make every frozen norm exactly its affine part: y = s * x + b
    x = torch.randn(1, WIDTH, 3, 3)
    norm = backbone.stem.conv1.norm
    expected = x * torch.from_numpy(blobs["res_conv1_bn_s"])[:, None, None] + torch.from_numpy(
        blobs["res_conv1_bn_b"])[:, None, None]
    torch.testing.assert_close(norm(x), expected, atol=1e-6, rtol=1e-6)


def test_msra_pickle_loads_into_a_whole_model(tmp_path):
    path = tmp_path / "R-101.pkl"
    path.write_bytes(pickle.dumps(c2_blobs(), protocol=2))
    model = build_model("r101-detr", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    report = load_weights(model, path)
    assert report.source_format == "msra" and report.loaded == len(model.backbone.state_dict())


def test_c2_names_cover_the_whole_r101():
    backbone = build_resnet()
    names = [("conv1_w", "res_conv1_bn_s", "res_conv1_bn_b")]
    for s, n in enumerate((3, 4, 23, 3)):
        for i in range(n):
            for branch in [*(["1"] if i == 0 else []), "2a", "2b", "2c"]:
                names.append(tuple(f"res{s + 2}_{i}_branch{branch}_{p}" for p in ("w", "bn_s", "bn_b")))
    mapped = {c2_resnet_key(name) for group in names for name in group}
    weights = {k for k in backbone.state_dict() if not k.endswith(("running_mean", "running_var"))}
    assert mapped == weights
    assert c2_resnet_key("fc1000_w") is None and c2_resnet_key("res2_0_branch2a_b") is None


class Exploit:
    """Pickles into a call of os.system: unpickling it runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_code_in_a_pkl_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "R-101.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": np.zeros(3, np.float32), "evil": Exploit(marker)}, protocol=2))
    with pytest.raises(UserError, match="refusing to load"):
        read_c2_pickle(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"blobs": {"x": __import__("builtins").eval}}))
    with pytest.raises(UserError, match=r"refusing to load builtins\.eval"):
        read_c2_pickle(path)


def test_pickled_code_in_a_pth_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pth"
    torch.save({"model": {"detr.query_embed.weight": torch.zeros(2, 2)}, "evil": Exploit(marker)}, path)
    model = build_model("r101-detr", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    with pytest.raises(UserError, match="holds objects other than tensors and plain containers, which are not loaded"):
        load_weights(model, path)
    assert not marker.exists()


def test_a_pkl_that_is_not_arrays_is_a_user_error(tmp_path):
    path = tmp_path / "R-101.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": [1, 2, 3]}))
    with pytest.raises(UserError, match="numpy arrays"):
        read_c2_pickle(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="safe pickle"):
        read_c2_pickle(path)
    path.write_bytes(pickle.dumps({"conv1_w": np.zeros((2, 3, 7, 7)), "fc9000_w": np.zeros(3)}))
    model = build_model("r101-detr", num_classes=CLASSES, num_predicates=PREDICATES, overrides=OVERRIDES)
    with pytest.raises(UserError, match=rf"{path}: 1 Caffe2 blob\(s\) are not ResNet weights"):
        load_weights(model, path)
