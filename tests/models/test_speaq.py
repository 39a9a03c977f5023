"""SpeaQ: predicate groups, query groups, the group cost mask, one-to-many assignment, the quality
weighting, the model's extra relation queries, and IterativeSG unchanged when SpeaQ is off.

Expected values are worked out by hand in the comments, not taken from the implementation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from itersg.cli import main
from itersg.errors import UserError
from itersg.models import build_model, count_parameters
from itersg.models.config import MatcherConfig, SpeaQConfig, model_config
from itersg.models.losses.build import build_criterion
from itersg.models.losses.criterion import TripletCriterion
from itersg.models.losses.one_to_many import assignment_quality, combine_ious, dynamic_k, repeat_targets
from itersg.models.losses.query_groups import (
    GROUP_MASK_COST,
    group_cost_mask,
    predicate_group_ids,
    predicate_groups,
    queries_per_group,
    query_group_ids,
)
from itersg.models.losses.speaq import SpeaQCriterion, SpeaQMatcher

# ``predicate_count`` of VG150's VG-SGG-dicts-with-attri.json, by predicate index (alphabetical):
# above, across, against, along, and, at, attached to, behind, belonging to, between, carrying, covered in,
# covering, eating, flying in, for, from, growing on, hanging from, has (19), holding, in (21), in front of,
# laying on, looking at, lying on, made of, mounted on, near (28), of (29), on (30), on back of, over,
# painted on, parked on, part of, playing, riding, says, sitting on, standing on, to, under, using,
# walking in, walking on, watching, wearing (47), wears, with (49).
VG150_PREDICATE_COUNTS = [
    47341, 1996, 3092, 3624, 3477, 9903, 10190, 41356, 3288, 3411, 5213, 2312, 3806, 4688, 1973, 9145, 2945,
    1853, 9894, 277936, 42722, 251756, 13715, 3739, 3083, 1869, 2380, 2253, 96589, 146339, 712409, 1914, 9317,
    3095, 2721, 2065, 3810, 8856, 2241, 18643, 14185, 2517, 22596, 1925, 1740, 4613, 3490, 136099, 15457, 66425,
]
DATA = Path(__file__).parent / "data"


# --- groups -------------------------------------------------------------------------------------------------

def test_vg150_groups_are_those_of_the_released_model():
    # total 2,046,006. Group 0: half of it is 1,023,003; on (712,409) + has (277,936) = 990,345 stays below,
    # adding in (251,756) would not. Group 1: 1,055,661 left, half 527,830; in + of = 398,095, + wearing
    # (136,099) = 534,194 is too much. Group 2: 657,566 left, half 328,783; wearing + near + with = 299,113,
    # + above (47,341) = 346,454 is too much. Group 3: the other 43 (358,453).
    groups = predicate_groups(VG150_PREDICATE_COUNTS, 4)
    assert [g.tolist() for g in groups[:3]] == [[30, 19], [21, 29], [47, 28, 49]]
    assert len(groups[3]) == 43 and sorted(torch.cat(groups).tolist()) == list(range(50))
    # 300 queries: trunc(300 * group / total) = 145 (145.2), 58 (58.4), 43 (43.9), 52 (52.6) = 298; the
    # 2 left go to the last two groups; x 2 relation queries each
    shares = queries_per_group(VG150_PREDICATE_COUNTS, groups, 300)
    assert shares == [145, 58, 44, 53]
    assert [2 * s for s in shares] == [290, 116, 88, 106]


def test_groups_follow_frequency_and_halving_on_a_small_case():
    # by id: [20, 5, 40, 10, 25]; by count: id2 (40), id4 (25), id0 (20), id3 (10), id1 (5); total 100.
    # group 0: half 50, 40 < 50 but 40 + 25 = 65 is not -> [2]; group 1: 60 left, half 30, 25 < 30 but
    # 25 + 20 = 45 is not -> [4]; group 2: the rest [0, 3, 1]
    counts = [20, 5, 40, 10, 25]
    groups = predicate_groups(counts, 3)
    assert [g.tolist() for g in groups] == [[2], [4], [0, 3, 1]]
    # 10 queries: 40 -> 4, 25 -> 2 (2.5), 35 -> 3 (3.5); 9 given, the 10th to the last group
    assert queries_per_group(counts, groups, 10) == [4, 2, 4]
    assert predicate_group_ids(groups, 5).tolist() == [2, 2, 0, 2, 1]
    # a group is empty when the most frequent predicate alone holds half: [10, 5, 3, 1], half of 19 is 9
    assert [g.tolist() for g in predicate_groups([10, 5, 3, 1], 2)] == [[], [0, 1, 2, 3]]
    assert [g.tolist() for g in predicate_groups(counts, 1)] == [[2, 4, 0, 3, 1]]


def test_leftover_queries_are_dealt_evenly_then_from_the_last_group():
    # 3 equal groups, 10 queries: 3 each (3.33), 1 left -> last group; 2 groups of 1 and 3 with 7 queries:
    # 1.75 -> 1, 5.25 -> 5, 1 left -> last
    equal = [torch.tensor([0]), torch.tensor([1]), torch.tensor([2])]
    assert queries_per_group([1, 1, 1], equal, 10) == [3, 3, 4]
    assert queries_per_group([1, 3], [torch.tensor([0]), torch.tensor([1])], 7) == [1, 6]


def test_query_groups_are_contiguous_blocks_and_the_mask_costs_other_groups():
    assert query_group_ids([2, 1], 2).tolist() == [0, 0, 0, 0, 1, 1]
    mask = group_cost_mask(torch.tensor([0, 0, 1]), torch.tensor([1, 0]))
    big = GROUP_MASK_COST
    assert mask.tolist() == [[big, 0.0], [big, 0.0], [0.0, big]]
    assert big == 1e6


# --- one-to-many --------------------------------------------------------------------------------------------

def _box(cx: float, cy: float, w: float, h: float) -> list[float]:
    return [cx, cy, w, h]


def test_quality_combines_ious_adds_the_weighted_predicate_probability_and_respects_groups():
    # subject: predicted = target (IoU 1). object: target x 0.2..0.4, predicted x 0.25..0.45, both y
    # 0.4..0.6: intersection 0.15 * 0.2 = 0.03, union 0.04 + 0.04 - 0.03 = 0.05 -> IoU 0.6
    layer = {
        "pred_sub_boxes": torch.tensor([[_box(0.5, 0.5, 0.2, 0.2)] * 2]),
        "pred_obj_boxes": torch.tensor([[_box(0.35, 0.5, 0.2, 0.2)] * 2]),
        # softmax of (log 2, 0, 0) = (0.5, 0.25, 0.25): p(predicate 0) = 0.5
        "pred_rel_logits": torch.tensor([[[math.log(2.0), 0.0, 0.0]] * 2]),
    }
    gathered = {"sub_boxes": torch.tensor([_box(0.5, 0.5, 0.2, 0.2)]),
                "obj_boxes": torch.tensor([_box(0.3, 0.5, 0.2, 0.2)]), "rel_labels": torch.tensor([0])}
    in_group = torch.tensor([[True], [False]])  # query 0 shares the target's group, query 1 does not
    expected = {"max": 1.0, "min": 0.6, "am": 0.8, "gm": math.sqrt(0.6)}
    for scheme, value in expected.items():
        quality = assignment_quality(layer, gathered, in_group, scheme, None)
        assert quality.shape == (1, 2, 1)
        assert quality[0, :, 0].tolist() == pytest.approx([value, 0.0], abs=1e-6)
    # weight -0.5: max 1 - 0.5 * 0.5 = 0.75; outside the group the IoUs vanish but the predicate term stays
    quality = assignment_quality(layer, gathered, in_group, "max", -0.5)
    assert quality[0, :, 0].tolist() == pytest.approx([0.75, -0.25], abs=1e-6)
    assert assignment_quality(layer, gathered, None, "max", -0.5)[0, :, 0].tolist() == pytest.approx([0.75, 0.75])
    with pytest.raises(ValueError, match="quality scheme"):
        combine_ious(torch.ones(1), torch.ones(1), "mean")


def test_dynamic_k_sums_the_best_qualities_truncates_and_keeps_at_least_one():
    # two images; image 0 owns target column 0, image 1 columns 1 and 2 (the other image's rows are ignored)
    quality = torch.tensor([
        [[0.95, 9.0, 9.0], [0.9, 9.0, 9.0], [0.8, 9.0, 9.0], [0.1, 9.0, 9.0]],
        [[9.0, 0.6, -0.2], [9.0, 0.5, -0.3], [9.0, 0.45, -0.1], [9.0, 0.44, 0.3]],
    ])
    # k = 3. image 0, target 0: 0.95 + 0.9 + 0.8 = 2.65 -> 2. image 1, target 1: 0.6 + 0.5 + 0.45 = 1.55 -> 1;
    # target 2: 0.3 - 0.1 - 0.2 = 0.0 -> 0 -> at least 1
    copies = dynamic_k(quality, [1, 2], 3)
    assert [c.tolist() for c in copies] == [[2], [1, 1]]
    # k = 4 for image 0: 2.75 -> 2; a negative sum truncates towards zero and is raised to 1
    assert dynamic_k(quality, [1, 2], 4)[0].tolist() == [2]
    negative = torch.full((1, 3, 1), -0.9)
    assert dynamic_k(negative, [1], 2)[0].tolist() == [1]
    repeated = repeat_targets([{"rel_labels": torch.tensor([3, 4]), "rel_boxes": torch.tensor([[1.0], [2.0]])}],
                              [torch.tensor([2, 1])])
    assert repeated[0]["rel_labels"].tolist() == [3, 3, 4]
    assert repeated[0]["rel_boxes"].tolist() == [[1.0], [1.0], [2.0]]


def test_matcher_repeats_good_targets_and_matches_only_within_groups():
    # counts [4, 3, 3], 2 groups: half of 10 is 5, 4 < 5 but 4 + 3 is not -> groups [0] and [1, 2].
    # 4 queries: 1.6 -> 1 and 2.4 -> 2, the one left to the last group -> query groups [0, 1, 1, 1]
    speaq = SpeaQConfig(query_multiplier=1, num_groups=2, one_to_many_k=2, quality="max", predicate_weight=None)
    matcher = SpeaQMatcher(MatcherConfig(), speaq, [4, 3, 3], num_queries=4)
    assert matcher.query_groups.tolist() == [0, 1, 1, 1]
    target_box, far = _box(0.3, 0.3, 0.2, 0.2), _box(0.8, 0.8, 0.1, 0.1)
    # IoU of x 0.2..0.4 with 0.22..0.42 (same y 0.2..0.4): 0.18 * 0.2 / (0.04 + 0.04 - 0.036) = 0.818
    near = _box(0.32, 0.3, 0.2, 0.2)

    def layer(boxes):
        out = {f"pred_{b}_boxes": torch.tensor([boxes]) for b in ("sub", "obj", "rel")}
        out.update({f"pred_{b}_logits": torch.zeros(1, 4, 5) for b in ("sub", "obj")})
        out["pred_rel_logits"] = torch.zeros(1, 4, 4)
        return out

    target = {"sub_labels": torch.tensor([0]), "obj_labels": torch.tensor([1]), "rel_labels": torch.tensor([1]),
              **{f"{b}_boxes": torch.tensor([target_box]) for b in ("sub", "obj", "rel")}}
    # predicate 1 is in group 1 (queries 1-3): the two best max-IoUs are 1 (query 2) + 0.818 (query 3) =
    # 1.818 -> one copy. Queries 0 and 2 predict it equally well, but query 0 is in group 0: query 2 wins.
    indices, repeated = matcher(layer([target_box, far, target_box, near]), [target])
    assert repeated[0]["rel_labels"].tolist() == [1]
    assert indices[0][0].tolist() == [2]
    # with query 3 perfect as well: 1 + 1 = 2 copies, matched to queries 2 and 3
    indices, repeated = matcher(layer([target_box, far, target_box, target_box]), [target])
    assert repeated[0]["rel_labels"].tolist() == [1, 1]
    assert sorted(indices[0][0].tolist()) == [2, 3] and sorted(indices[0][1].tolist()) == [0, 1]


# --- model, criterion, parameters ---------------------------------------------------------------------------

def test_released_speaq_model_has_the_official_parameter_counts():
    model = build_model("r101-detr-speaq")
    assert count_parameters(model) == {"backbone": 42_394_816, "total": 93_328_270, "trainable": 93_105_870}
    assert model.relation_query_embed.weight.shape == (600, 256)
    assert model.subject_query_embed.weight.shape == model.object_query_embed.weight.shape == (300, 256)
    plain = build_model("r101-detr")
    # 1,169 entries here; the official file adds the criterion's two class-weight buffers: 1,171
    assert plain.state_dict().keys() == model.state_dict().keys() and len(model.state_dict()) == 1169


def test_speaq_outputs_one_entity_prediction_per_relation_query(small_overrides, scenes):
    torch.manual_seed(0)
    model = build_model("r101-detr-speaq", num_classes=4, num_predicates=4,
                        overrides={**small_overrides, "speaq": {"num_groups": 2}})
    model.eval()
    data = scenes(2, size=64)
    with torch.no_grad():
        out = model([image for image, _ in data])
    q = small_overrides["num_queries"]
    for key in ("pred_sub_logits", "pred_obj_boxes", "pred_rel_logits", "pred_rel_boxes"):
        assert out[key].shape[1] == 2 * q
        assert out["aux_outputs"][0][key].shape[1] == 2 * q
    # relation queries 2i and 2i + 1 share subject and object query i
    torch.testing.assert_close(out["pred_sub_boxes"][:, 0::2], out["pred_sub_boxes"][:, 1::2], rtol=0, atol=0)
    assert not torch.equal(out["pred_rel_boxes"][:, 0::2], out["pred_rel_boxes"][:, 1::2])


def test_speaq_criterion_matches_every_layer_on_its_own(small_overrides, scenes):
    torch.manual_seed(0)
    model = build_model("r101-detr-speaq", num_classes=4, num_predicates=4,
                        overrides={**small_overrides, "speaq": {"num_groups": 2}})
    criterion = build_criterion(model, predicate_counts=[6, 5, 3, 2])
    assert isinstance(criterion, SpeaQCriterion)
    data = scenes(2, size=64)
    outputs = model([image for image, _ in data])
    losses = criterion(outputs, [target for _, target in data])
    assert set(losses) == set(criterion.weight_dict)
    total = criterion.weighted_total(losses)
    assert torch.isfinite(total)
    total.backward()
    assert model.relation_query_embed.weight.grad.abs().sum() > 0
    # an image without relations has nothing to repeat or match: every query learns "no relation" there
    empty = [data[0][1], {**data[1][1], "relations": torch.zeros(0, 3, dtype=torch.int64)}]
    assert torch.isfinite(criterion.weighted_total(criterion(outputs, empty)))
    with pytest.raises(ValueError, match="predicate counts"):
        build_criterion(model)
    assert isinstance(build_criterion(build_model("r101-detr", num_classes=4, num_predicates=4,
                                                  overrides=small_overrides)), TripletCriterion)


def test_speaq_settings_are_checked():
    assert model_config(speaq=True).speaq == SpeaQConfig(2, 4, 4, "max", -0.5)
    assert model_config({"speaq": {"num_groups": 3}}).speaq is None  # IterativeSG ignores them
    with pytest.raises(UserError, match="unknown key"):
        model_config({"speaq": {"groups": 3}}, speaq=True)
    with pytest.raises(UserError, match="quality"):
        model_config({"speaq": {"quality": "mean"}}, speaq=True)
    with pytest.raises(UserError, match="positive integer"):
        model_config({"speaq": {"num_groups": 0}}, speaq=True)
    with pytest.raises(UserError, match="exceeds"):
        model_config({"num_queries": 1, "speaq": {"query_multiplier": 1}}, speaq=True)


# --- SpeaQ off: IterativeSG as before --------------------------------------------------------------------

GOLDEN_OVERRIDES = {"hidden_dim": 32, "nheads": 4, "enc_layers": 1, "dec_layers": 3, "dim_feedforward": 64,
                    "num_queries": 8, "dropout": 0.0, "backbone": {"small": True}}


def _golden_run(scenes) -> dict:
    """Outputs, losses and per-tensor weight sums of a seeded small IterativeSG on 3 synthetic scenes."""
    torch.manual_seed(0)
    model = build_model("r101-detr", num_classes=4, num_predicates=4, overrides=GOLDEN_OVERRIDES)
    criterion = build_criterion(model, predicate_frequencies=torch.tensor([0.5, 0.3, 0.15, 0.05]))
    data = scenes(3, size=64, seed=3)
    outputs = model([image for image, _ in data])
    losses = criterion(outputs, [target for _, target in data])
    flat = {k: v.detach() for k, v in outputs.items() if k != "aux_outputs"}
    for i, aux in enumerate(outputs["aux_outputs"]):
        flat.update({f"{k}_{i}": v.detach() for k, v in aux.items()})
    return {"outputs": flat, "losses": {k: v.detach() for k, v in losses.items()},
            "state_dict": {k: v.sum(dtype=torch.float64) for k, v in model.state_dict().items()}}


# The golden file comes from another machine: float32 kernels there may sum in another order (another
# SIMD width), which changes results by a few units of float32 rounding (2^-24 = 6e-8) per operation. Through
# this model's ~100 layers that compounds to about 1e-6 relative (measured: 9e-7 between an AMD EPYC without
# AVX-512 and the Intel Xeon that wrote the file); a change of what the model computes moves them by orders of
# magnitude more. ATOL covers the weight sums that are close to zero (BatchNorm running means).
GOLDEN_RTOL, GOLDEN_ATOL = 1e-5, 1e-6


def test_iterativesg_is_unchanged_from_the_code_before_speaq(scenes):
    # data/iterativesg_r101_small_golden.pt was written by ``_golden_run`` with the code before SpeaQ
    # existed (CPU, one thread). Every output, loss and weight must equal it up to float32 rounding.
    golden = torch.load(DATA / "iterativesg_r101_small_golden.pt", weights_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        current = _golden_run(scenes)
    finally:
        torch.set_num_threads(threads)
    for part in ("state_dict", "outputs", "losses"):
        assert current[part].keys() == golden[part].keys(), part
        for name, expected in golden[part].items():
            torch.testing.assert_close(current[part][name], expected, rtol=GOLDEN_RTOL, atol=GOLDEN_ATOL,
                                       msg=lambda m, part=part, name=name: f"{part} {name}: {m}")


def test_count_params_prints_the_released_totals_and_groups(tmp_path, capsys):
    names = [f"predicate {i}" for i in range(50)]
    dicts = {"label_to_idx": {"thing": 1}, "predicate_to_idx": {n: i + 1 for i, n in enumerate(names)},
             "predicate_count": dict(zip(names, VG150_PREDICATE_COUNTS))}
    path = tmp_path / "VG-SGG-dicts-with-attri.json"
    path.write_text(json.dumps(dicts))
    assert main(["count-params", "r101-detr-speaq", "--dicts", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "backbone": 42_394_816, "total": 93_328_270, "trainable": 93_105_870, "relation_queries": 600,
        "groups": {"predicates": [2, 2, 3, 43], "relation_queries": [290, 116, 88, 106]}}
    del dicts["predicate_count"]
    path.write_text(json.dumps(dicts))
    assert main(["count-params", "r101-detr-speaq", "--dicts", str(path)]) == 2
    assert "predicate_count" in capsys.readouterr().err


def test_speaq_combines_with_the_vovnet_centermask_variant(small_overrides, scenes):
    torch.manual_seed(0)
    overrides = {**small_overrides, "backbone": {"small": True}, "aux_head": {"small": True},
                 "speaq": {"num_groups": 2}}
    model = build_model("vovnet39-centermask-speaq", num_classes=4, num_predicates=4, overrides=overrides,
                        transformer_level="P3")
    plain = build_model("vovnet39-centermask", num_classes=4, num_predicates=4, overrides=overrides,
                        transformer_level="P3")
    # only the relation queries differ: Q more of them, of width hidden_dim
    q, d = small_overrides["num_queries"], small_overrides["hidden_dim"]
    assert count_parameters(model)["total"] - count_parameters(plain)["total"] == q * d
    criterion = build_criterion(model, predicate_counts=[6, 5, 3, 2])
    data = scenes(2, size=64)
    losses = criterion(model([image for image, _ in data]), [target for _, target in data])
    assert any(name.startswith("loss_fcos") for name in losses)  # the CenterMask head still trains
    assert torch.isfinite(criterion.weighted_total(losses))


def test_doubled_relation_queries_with_equal_embeddings_compute_iterativesg(small_overrides, scenes):
    # relation queries 2i and 2i + 1 both pair with subject/object query i. Give both IterativeSG's relation
    # query i: every triplet then appears twice, attention over two equal copies equals attention over one,
    # so SpeaQ's outputs are IterativeSG's, each relation output twice.
    torch.manual_seed(0)
    overrides = {**small_overrides, "dropout": 0.0}
    isg = build_model("r101-detr", num_classes=4, num_predicates=4, overrides=overrides).eval()
    with torch.no_grad():  # the conditioning starts at zero: switch it on, or the pairing would not matter
        for name, parameter in isg.transformer.decoder.named_parameters():
            if "_proj." in name:
                parameter.normal_(0.0, 0.2)
    speaq = build_model("r101-detr-speaq", num_classes=4, num_predicates=4, overrides=overrides).eval()
    state = isg.state_dict()
    state["relation_query_embed.weight"] = state["relation_query_embed.weight"].repeat_interleave(2, dim=0)
    speaq.load_state_dict(state)
    images = [image for image, _ in scenes(2, size=64)]
    with torch.no_grad():
        ours, reference = speaq(images), isg(images)
    for key in ("pred_sub_logits", "pred_obj_boxes", "pred_rel_logits", "pred_rel_boxes"):
        for i in (0, 1):
            torch.testing.assert_close(ours[key][:, i::2], reference[key], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours["aux_outputs"][0][key][:, 1::2], reference["aux_outputs"][0][key],
                                   rtol=1e-4, atol=1e-5)
