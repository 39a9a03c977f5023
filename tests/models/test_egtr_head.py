"""EGTR's relation head, matcher, losses and scoring, against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from itersg.models.losses.egtr_criterion import (
    EGTRCriterion,
    EGTRLossConfig,
    EGTRMatcher,
    connectivity_target,
    nonmatching_cost,
    query_weights,
    relation_target,
    sample_relation_entries,
)
from itersg.models.relation.egtr import EGTRRelationHead, frequency_tables, predicate_statistics
from itersg.models.relation.egtr_scoring import postprocess_egtr

LN3 = math.log(3.0)
LOG_1E8 = -math.log(1e-8)  # 18.420680743952367
LOGIT_SMOOTHING = math.log(1e14 - 1)  # -logit(1e-14)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def tiny_head(**kwargs) -> EGTRRelationHead:
    args = {"d_model": 8, "num_layers": 2, "num_heads": 2, "num_predicates": 3, "num_classes": 3, **kwargs}
    return EGTRRelationHead(**args)


def tiny_outputs(head: EGTRRelationHead, batch: int = 2, queries: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    d, layers, classes = head.d_model, head.num_layers, head.triplet_dist.shape[0] - 1
    return {"pred_logits": torch.randn(batch, queries, classes, generator=g),
            "pred_boxes": torch.rand(batch, queries, 4, generator=g) * 0.4 + 0.3,
            "last_hidden_state": torch.randn(batch, queries, d, generator=g),
            "decoder_queries": torch.randn(layers, batch, queries, d, generator=g) * head.head_dim ** -0.5,
            "decoder_keys": torch.randn(layers, batch, queries, d, generator=g)}


# ---------------------------------------------------------------- the head


def test_parameter_counts_are_the_official_ones():
    head = EGTRRelationHead()
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(head.proj_q) == count(head.proj_k) == 394_752
    assert (count(head.rel_predictor), count(head.connectivity_layer), count(head.rel_predictor_gate)) == (
        209_970, 197_377, 513)
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == 1_328_948
    assert head.triplet_dist.shape == (151, 151, 50) and head.rel_dist.shape == (50,)
    assert sum(p.numel() for p in head.parameters() if not p.requires_grad) == 1_140_100
    names = {name.split(".")[0] for name, _ in head.named_parameters()}
    assert names == {"proj_q", "proj_k", "final_sub_proj", "final_obj_proj", "rel_predictor_gate", "rel_predictor",
                     "connectivity_layer", "triplet_dist", "rel_dist"}


def test_gated_sum_over_two_sources_of_two_queries():
    head = EGTRRelationHead(d_model=2, num_layers=1, num_heads=1, num_predicates=1, num_classes=2)
    with torch.no_grad():  # gate logit of (i, j, s) = subject_is[0] + object_js[1]
        head.rel_predictor_gate.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
        head.rel_predictor_gate.bias.zero_()
    subjects = torch.tensor([[[[0.0, 1.0], [LN3, 2.0]], [[LN3, 3.0], [0.0, 4.0]]]])  # [1, 2 queries, 2 sources, 2]
    objects = torch.tensor([[[[5.0, 0.0], [6.0, LN3]], [[7.0, 0.0], [8.0, 0.0]]]])
    features, gates = head.gated_features(subjects, objects)
    # sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75, sigmoid(ln 9) = 0.9
    expected_gates = [[[0.5, 0.9], [0.5, 0.75]], [[0.75, 0.75], [0.75, 0.5]]]
    torch.testing.assert_close(gates[0], torch.tensor(expected_gates))
    expected = [[[0.9 * LN3, 2.3, 7.9, 0.9 * LN3], [0.75 * LN3, 2.0, 9.5, 0.0]],   # 0.5 s_i0 + 0.9 s_i1, ...
                [[0.75 * LN3, 5.25, 8.25, 0.75 * LN3], [0.75 * LN3, 4.25, 9.25, 0.0]]]
    torch.testing.assert_close(features[0], torch.tensor(expected))


def test_sources_unscale_queries_and_end_with_the_last_hidden_state():
    head = EGTRRelationHead(d_model=2, num_layers=1, num_heads=1, num_predicates=1, num_classes=2)
    with torch.no_grad():
        for linear in (head.proj_q[0], head.proj_k[0], head.final_sub_proj, head.final_obj_proj):
            linear.weight.copy_(torch.eye(2))
    queries = torch.tensor([[[[1.0, 2.0]]]])  # [L=1, B=1, N=1, d=2], already times 2 ** -0.5
    keys, hidden = torch.tensor([[[[3.0, 4.0]]]]), torch.tensor([[[5.0, 6.0]]])
    subjects, objects = head.relation_sources({"decoder_queries": queries, "decoder_keys": keys,
                                               "last_hidden_state": hidden})
    root2 = math.sqrt(2.0)
    torch.testing.assert_close(subjects, torch.tensor([[[[root2, 2 * root2], [5.0, 6.0]]]]))
    torch.testing.assert_close(objects, torch.tensor([[[[3.0, 4.0], [5.0, 6.0]]]]))


def _official_style_forward(head: EGTRRelationHead, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's computation written out: the [B, N, N, L + 1, 2d] tensor, gate, sum, MLPs, bias."""
    n = out["pred_logits"].shape[1]
    q = torch.stack([p(x * head.head_dim ** 0.5) for p, x in zip(head.proj_q, out["decoder_queries"])], -2)
    k = torch.stack([p(x) for p, x in zip(head.proj_k, out["decoder_keys"])], -2)
    source = torch.cat([q.unsqueeze(2).repeat(1, 1, n, 1, 1), k.unsqueeze(1).repeat(1, n, 1, 1, 1)], -1)
    sub = head.final_sub_proj(out["last_hidden_state"]).unsqueeze(2).repeat(1, 1, n, 1)
    obj = head.final_obj_proj(out["last_hidden_state"]).unsqueeze(1).repeat(1, n, 1, 1)
    source = torch.cat([source, torch.cat([sub, obj], -1).unsqueeze(-2)], -2)
    gated = (torch.sigmoid(head.rel_predictor_gate(source)) * source).sum(-2)
    classes = out["pred_logits"].argmax(-1)
    bias = torch.stack([head.triplet_dist[c][:, c] for c in classes])
    return head.rel_predictor(gated) + bias, head.connectivity_layer(gated)


def test_forward_equals_the_reference_computation():
    torch.manual_seed(0)
    head = tiny_head()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(std=0.5)
    out = tiny_outputs(head)
    result = head(out)
    rel, connectivity = _official_style_forward(head, out)
    assert result["pred_rel"].shape == (2, 4, 4, 3) and result["pred_connectivity"].shape == (2, 4, 4, 1)
    torch.testing.assert_close(result["pred_rel"], rel, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result["pred_connectivity"], connectivity, rtol=1e-5, atol=1e-5)


def test_frequency_bias_is_the_table_entry_of_the_argmax_classes():
    head = tiny_head()
    with torch.no_grad():
        head.rel_predictor.layers[-1].weight.zero_()
        head.rel_predictor.layers[-1].bias.zero_()
        head.triplet_dist.copy_(torch.arange(48.0).view(4, 4, 3))
    out = tiny_outputs(head, batch=1, queries=3)
    out["pred_logits"] = torch.tensor([[[0.0, 0.0, 5.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]])  # classes 2, 0, 1
    rel = head(out)["pred_rel"][0]
    # entry (i, j, p) = table[c_i, c_j, p] = 12 c_i + 3 c_j + p
    assert rel[0, 1].tolist() == [24.0, 25.0, 26.0]  # (2, 0)
    assert rel[1, 2].tolist() == [3.0, 4.0, 5.0]  # (0, 1)
    assert rel[2, 2].tolist() == [15.0, 16.0, 17.0]  # (1, 1)
    assert head.use_freq_bias
    no_bias = tiny_head(use_freq_bias=False)
    no_bias.load_state_dict(head.state_dict())
    assert no_bias(out)["pred_rel"].abs().max() == 0


def test_frequency_tables_get_no_gradient_and_every_other_parameter_does():
    torch.manual_seed(0)
    head = tiny_head()
    head.load_statistics(np.arange(48).reshape(4, 4, 3))
    out = head(tiny_outputs(head))
    (out["pred_rel"].sum() + out["pred_connectivity"].sum()).backward()
    for name, parameter in head.named_parameters():
        if name in ("triplet_dist", "rel_dist"):
            assert not parameter.requires_grad and parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- frequency statistics


def test_statistics_count_only_overlapping_pairs_once_each():
    boxes = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [12, 0, 20, 8]], dtype=np.float32)  # A, B, C
    labels = np.array([0, 1, 1])
    # A->B touch at one corner pixel (overlap under Motifs' +1 rule); A->C and C->B are apart; B->A overlaps.
    relations = np.array([[0, 1, 2], [0, 2, 1], [2, 1, 0], [0, 1, 2], [1, 0, 3]])
    second = (np.array([2, 0]), np.array([[0, 0, 5, 5], [2, 2, 8, 8]]), np.array([[0, 1, 2]]))
    images = [(labels, boxes, relations), second]

    fg = predicate_statistics(images, num_classes=3, num_predicates=4)
    assert fg.shape == (4, 4, 4) and fg.dtype == np.int64
    assert {tuple(i) for i in np.argwhere(fg)} == {(0, 1, 2), (1, 0, 3), (2, 0, 2)}
    assert fg.sum() == 3 and fg[3].sum() == 0 and fg[:, 3].sum() == 0

    assert predicate_statistics(images, 3, 4, unique=False)[0, 1, 2] == 2
    assert predicate_statistics(images, 3, 4, pixel_offset=0.0)[0, 1, 2] == 0  # continuous boxes only touch
    everything = predicate_statistics(images, 3, 4, must_overlap=False)
    assert everything.sum() == 5 and everything[0, 1, 1] == 1 and everything[1, 1, 0] == 1


def test_frequency_tables_follow_the_reference_expression():
    fg = np.zeros((2, 2, 2), dtype=np.int64)
    fg[0, 1] = [3, 0]
    triplet, rel = frequency_tables(fg)
    # log(fg + eps / (n_pair + eps)): seen -> log(count), unseen predicate of a seen pair -> log(eps / 3)
    torch.testing.assert_close(triplet[0, 1], torch.tensor([math.log(3.0), math.log(1e-12 / 3)]))
    assert triplet[0, 0].tolist() == [0.0, 0.0] and triplet[1, 1].tolist() == [0.0, 0.0]  # unseen pair: log 1
    torch.testing.assert_close(rel, torch.tensor([1.0, 0.0]))
    head = EGTRRelationHead(d_model=8, num_layers=1, num_heads=2, num_predicates=2, num_classes=1, fg_matrix=fg)
    torch.testing.assert_close(head.triplet_dist.data, triplet)


# ---------------------------------------------------------------- matching and relation smoothing


def test_matching_costs_and_smoothing_weights():
    outputs = {"pred_logits": torch.tensor([[[-30.0, 30.0], [0.0, 0.0]], [[0.0, 0.0], [-30.0, -30.0]]]),
               "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]],
                                           [[0.6, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])}
    target = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    indices, costs = EGTRMatcher()(outputs, [target, target])
    assert [src.tolist() for src, _ in indices] == [[0], [0]]
    # perfect match: p = 1, same box -> cost_min, shifted to logit(1e-14)
    assert costs[0].item() == pytest.approx(-LOGIT_SMOOTHING, abs=1e-4)
    # p = 0.5: class 2 * (0.0625 - 0.1875) ln 2; L1 5 * 0.1; GIoU 2 * -(0.02 / 0.06)
    raw = 2 * -0.125 * math.log(2.0) + 0.5 - 2.0 / 3.0
    cost_min = 2 * 0.75 * -LOG_1E8 - 2.0
    assert costs[1].item() == pytest.approx(raw - cost_min - LOGIT_SMOOTHING, abs=1e-4)

    unmatched = nonmatching_cost(2.0, 5.0, 2.0, 1e-14)
    assert unmatched.item() == pytest.approx(2 * LOG_1E8 + 20 + 4 - LOGIT_SMOOTHING, abs=1e-4)  # 28.605
    weights = query_weights(2, indices[1][0], costs[1], unmatched)
    assert weights[0].item() == pytest.approx(1 - sigmoid(raw - cost_min - LOGIT_SMOOTHING), abs=1e-6)  # 0.950
    assert weights[1].item() == 0.0  # 1 - sigmoid(28.6) rounds to 0 in float32
    assert query_weights(2, indices[0][0], costs[0], unmatched).tolist() == [1.0, 0.0]


def test_relation_targets_collapse_repeats_and_connectivity_marks_any_predicate():
    relations = torch.tensor([[0, 1, 2], [0, 1, 3], [1, 0, 2], [0, 1, 2], [2, 0, 1]])
    src, tgt = torch.tensor([0, 2]), torch.tensor([0, 1])  # GT 0 -> query 0, GT 1 -> query 2, GT 2 unmatched
    target = relation_target(relations, src, tgt, num_objects=3, num_queries=3, num_predicates=4)
    assert {tuple(i) for i in target.nonzero().tolist()} == {(0, 2, 2), (0, 2, 3), (2, 0, 2)}
    assert target.max() == 1.0
    expected = torch.zeros(3, 3, 1)
    expected[0, 2] = expected[2, 0] = 1.0
    assert torch.equal(connectivity_target(target), expected)


def test_negative_sampling_keeps_the_hardest_per_positive_counts():
    logits = torch.arange(18.0).view(3, 3, 2)  # entry (i, j, p) = 6 i + 2 j + p
    target = torch.zeros(3, 3, 2)
    target[0, 1] = 1.0  # one pair with two predicates: 2 positive entries
    matched = torch.tensor([True, True, False])

    def kept(negatives, nonmatching):
        return [tuple(e) for e in sample_relation_entries(logits, target, matched, negatives, nonmatching).tolist()]

    entries = kept(1, 2)  # 2 positives -> 2 of the 6 matched negatives, 4 of the 10 non-matching entries
    assert entries[:2] == [(0, 1, 0), (0, 1, 1)]
    assert set(entries[2:4]) == {(1, 1, 1), (1, 1, 0)}  # logits 9 and 8: the largest negatives
    assert set(entries[4:]) == {(2, 2, 1), (2, 2, 0), (2, 1, 1), (2, 1, 0)}  # logits 17 .. 14
    assert len(kept(80, 80)) == 2 + 6 + 10  # 160 asked of each kind, capped by what exists
    assert len(kept(80, 0)) == 2 + 6
    assert kept(80, 80)[2:8].count((0, 0, 0)) == 1  # self pairs of matched queries are negatives
    no_positive = torch.zeros(3, 3, 2)
    assert len(sample_relation_entries(logits, no_positive, matched, 80, 80)) == 0
    assert len(sample_relation_entries(logits, no_positive, matched, None, 80)) == 8  # None keeps all


def test_relation_loss_smooths_targets_by_both_weights():
    criterion = EGTRCriterion()
    logits = torch.zeros(2, 2, 1)
    logits[0, 1, 0] = 1.0
    target = torch.zeros(2, 2, 1)
    target[0, 1, 0] = 1.0
    weights = torch.tensor([0.9, 0.5])
    # all four entries kept (1 positive, 3 matched negatives); BCE(1, t) = ln(1 + e) - t, BCE(0, 0) = ln 2
    expected = (math.log(1 + math.e) - 0.45 + 3 * math.log(2.0)) / 4
    terms = criterion.relation_bce(logits, target, weights, torch.tensor([0, 1]))
    assert terms.mean().item() == pytest.approx(expected, abs=1e-6)
    criterion.eval()  # all pairs, mean over predicates per pair
    assert criterion.relation_bce(logits, target, weights, torch.tensor([0, 1])).shape == (4,)


# ---------------------------------------------------------------- the criterion


def _scene() -> tuple[dict, list[dict]]:
    torch.manual_seed(0)
    head = tiny_head()
    outputs = tiny_outputs(head, batch=2, queries=4)
    outputs["pred_logits"].requires_grad_(True)
    outputs.update(head(outputs))
    targets = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.4, 0.6, 0.3, 0.1]]),
                "relations": torch.tensor([[0, 1, 2], [0, 1, 0], [1, 0, 1]])},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]]),
                "relations": torch.zeros(0, 3, dtype=torch.int64)}]
    return outputs, targets


def test_focal_loss_sums_over_queries_and_classes_per_gt_box():
    outputs = {"pred_logits": torch.zeros(1, 2, 2),
               "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])}
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    losses = EGTRCriterion()(outputs, targets)
    # p = 0.5: 3 negatives 0.75 * 0.25 * ln 2 and 1 positive 0.25 * 0.25 * ln 2, over 1 GT box
    assert losses["loss_ce"].item() == pytest.approx(0.625 * math.log(2.0), abs=1e-6)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    assert "loss_rel" not in losses


def test_criterion_names_weights_and_gradients():
    outputs, targets = _scene()
    criterion = EGTRCriterion()
    losses = criterion(outputs, targets)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou", "loss_rel", "loss_connectivity"}
    assert criterion.weight_dict == {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_rel": 15.0,
                                     "loss_connectivity": 30.0}
    total = criterion.weighted_total(losses)
    assert torch.isfinite(total)
    total.backward()
    assert outputs["pred_logits"].grad.abs().sum() > 0


def test_auxiliary_detection_losses_are_optional():
    outputs, targets = _scene()
    outputs["aux_outputs"] = [{"pred_logits": outputs["pred_logits"] * 0.5, "pred_boxes": outputs["pred_boxes"]}]
    assert "loss_ce_0" not in EGTRCriterion()(outputs, targets)
    criterion = EGTRCriterion(EGTRLossConfig(aux_loss=True), num_layers=2)
    losses = criterion(outputs, targets)
    assert {"loss_ce_0", "loss_bbox_0", "loss_giou_0"} <= set(losses) and "loss_rel_0" not in losses
    assert criterion.weight_dict["loss_giou_0"] == 2.0
    with pytest.raises(ValueError, match="smoothing"):
        EGTRLossConfig(smoothing=0.0)


def test_a_batch_without_relations_has_a_zero_relation_loss():
    outputs, targets = _scene()
    targets[0]["relations"] = torch.zeros(0, 3, dtype=torch.int64)
    losses = EGTRCriterion()(outputs, targets)
    assert losses["loss_rel"].item() == 0.0 and torch.isfinite(losses["loss_connectivity"])


# ---------------------------------------------------------------- inference scoring


def test_scoring_ranks_pairs_without_self_pairs():
    # object scores (softmax max): 0.75 (class 0), 0.8 (class 1), 0.6 (class 1)
    pred_logits = torch.tensor([[[LN3, 0.0], [0.0, math.log(4.0)], [0.0, math.log(1.5)]]])
    probs = torch.full((3, 3, 2), 0.99)  # self pairs would win
    for (i, j), p in {(0, 1): [0.8, 0.2], (1, 0): [0.5, 0.9], (0, 2): [0.2, 0.6], (2, 0): [0.1, 0.1],
                      (1, 2): [0.6, 0.3], (2, 1): [0.2, 0.2]}.items():
        probs[i, j] = torch.tensor(p)
    outputs = {"pred_logits": pred_logits, "pred_rel": torch.logit(probs.double()).float()[None],
               "pred_connectivity": torch.zeros(1, 3, 3, 1),  # sigmoid 0.5
               "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.4]] * 3])}
    [result] = postprocess_egtr(outputs, [(50, 100)], [(100, 200)], image_ids=[7], max_triplets=4)
    # 0.5 max(p) s_i s_j: (1,0) .45*.6=.27, (0,1) .4*.6=.24, (1,2) .3*.48=.144, (0,2) .3*.45=.135, (2,1) .048
    assert result["rel_pairs"].tolist() == [[1, 0], [0, 1], [1, 2], [0, 2]]
    torch.testing.assert_close(result["triplet_scores"], torch.tensor([0.27, 0.24, 0.144, 0.135]))
    torch.testing.assert_close(result["rel_scores"][0], torch.tensor([0.25, 0.45, 0.0]))
    torch.testing.assert_close(result["scores"], torch.tensor([0.75, 0.8, 0.6]))
    assert result["labels"].tolist() == [0, 1, 1] and result["image_id"] == 7
    torch.testing.assert_close(result["boxes"][0], torch.tensor([80.0, 30.0, 120.0, 70.0]))  # W 200, H 100
    [everything] = postprocess_egtr(outputs, [(50, 100)], [(100, 200)])
    assert len(everything["rel_pairs"]) == 6 and (everything["rel_pairs"][:, 0] != everything["rel_pairs"][:, 1]).all()


def test_scoring_keys_match_the_project_postprocess():
    head = tiny_head()
    outputs = tiny_outputs(head)
    outputs.update(head(outputs))
    results = postprocess_egtr(outputs, [(8, 8)] * 2, [(16, 16)] * 2)
    assert set(results[0]) == {"image_id", "boxes", "labels", "scores", "rel_pairs", "rel_scores", "triplet_scores"}
    assert results[1]["rel_scores"].shape == (12, 4) and results[1]["boxes"].shape == (4, 4)
    assert isinstance(head, nn.Module)
