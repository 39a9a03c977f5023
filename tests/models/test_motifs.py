"""Neural Motifs' predictor (SGB's MotifPredictor): sizes, hand-worked pieces and the three modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from itersg.models.relation.motifs import (
    DecoderRNN,
    FrequencyBias,
    MotifPredictor,
    MotifsConfig,
    class_word_vectors,
    encode_box_info,
    frequency_log_dist,
    later_nms,
    leftright_order,
    sgb_statistics,
    to_onehot,
)

TINY = {"num_obj_classes": 5, "num_rel_classes": 4, "in_channels": 16, "union_dim": 16, "embed_dim": 6,
        "hidden_dim": 8, "pooling_dim": 16, "later_nms_thresh": 0.5}


def lstm_params(inputs: int, hidden: int) -> int:
    """One direction of one nn.LSTM layer: W_ih [4h, in], W_hh [4h, h], b_ih and b_hh [4h]."""
    return 4 * hidden * (inputs + hidden) + 8 * hidden


def linear(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs


def tiny(mode: str, **kwargs) -> MotifPredictor:
    torch.manual_seed(0)
    return MotifPredictor(MotifsConfig(mode=mode, **{**TINY, **kwargs}))


def scene(counts=(4, 3), seed: int = 0, classes: int = 5, dim: int = 16) -> dict:
    """Random inputs of MotifPredictor.forward: per image boxes, sizes, features, all ordered pairs, labels
    1..C-1, detector logits and per-class boxes (the box jittered per class)."""
    g = torch.Generator().manual_seed(seed)
    out = {key: [] for key in ("boxes", "image_sizes", "roi_features", "rel_pair_idxs", "union_features",
                               "labels", "class_logits", "boxes_per_class")}
    for k in counts:
        xy = torch.rand(k, 2, generator=g) * 60
        boxes = torch.cat([xy, xy + 10 + torch.rand(k, 2, generator=g) * 30], 1)
        pairs = torch.tensor([(i, j) for i in range(k) for j in range(k) if i != j])
        out["boxes"].append(boxes)
        out["image_sizes"].append((100, 120))
        out["roi_features"].append(torch.randn(k, dim, generator=g))
        out["rel_pair_idxs"].append(pairs)
        out["union_features"].append(torch.randn(len(pairs), dim, generator=g))
        out["labels"].append(torch.randint(1, classes, (k,), generator=g))
        out["class_logits"].append(torch.randn(k, classes, generator=g) * 2)
        out["boxes_per_class"].append(boxes[:, None] + torch.rand(k, classes, 4, generator=g) * 3)
    return out


# ---------------------------------------------------------------- sizes and names


def test_parameter_count_of_the_vg_predictor():
    """e2e_relation_X_101_32_8_FPN_1x.yaml: 151 classes, 51 predicates, ROI / union / pooling 4096,
    GloVe 200, hidden 512, one layer per LSTM."""
    c, p, f, e, h, pool = 151, 51, 4096, 200, 512, 4096
    obj_in = f + e + 128  # ROI feature | class embedding | box embedding = 4424
    parts = {
        "obj_embed1": c * e,  # 30_200
        "obj_embed2": c * e,
        "pos_embed": linear(9, 32) + 2 * 32 + linear(32, 128),  # 320 + 64 (BN) + 4_224 = 4_608
        "obj_ctx_rnn": 2 * lstm_params(obj_in, h),  # 2 * (2048 * 4936 + 4096) = 20_226_048
        "decoder_rnn": ((c + 1) * e  # "start" + classes: 30_400
                        + linear(h + obj_in + e, 6 * h)  # 5136 -> 3072: 15_780_864
                        + linear(h, 5 * h)  # 1_313_280
                        + linear(h, c)),  # 77_463
        "edge_ctx_rnn": 2 * lstm_params(e + h + f, h),  # 2 * (2048 * 5320 + 4096) = 21_798_912
        "lin_obj_h": linear(2 * h, h),  # 524_800
        "lin_edge_h": linear(2 * h, h),
    }
    head = {"post_emb": linear(h, 2 * h), "post_cat": linear(2 * h, pool), "rel_compress": linear(pool, p),
            "freq_bias": c * c * p}  # 525_312, 4_198_400, 208_947, 1_162_851
    assert parts["decoder_rnn"] == 17_202_007
    model = MotifPredictor()
    count = lambda module: sum(t.numel() for t in module.parameters())  # noqa: E731
    assert {name: count(getattr(model.context_layer, name)) for name in parts} == parts
    assert {name: count(getattr(model, name)) for name in head} == head
    assert count(model) == sum(parts.values()) + sum(head.values()) == 66_437_085
    buffers = dict(model.named_buffers())
    assert buffers["context_layer.untreated_dcd_feat"].shape == (h + obj_in,)
    assert buffers["context_layer.untreated_obj_feat"].shape == (obj_in,)
    assert buffers["context_layer.untreated_edg_feat"].shape == (e + f,)


def test_parameter_names_are_sgbs():
    state = MotifPredictor(MotifsConfig(**TINY)).state_dict()
    shapes = {"context_layer.obj_embed1.weight": (5, 6), "context_layer.obj_ctx_rnn.weight_ih_l0": (32, 16 + 6 + 128),
              "context_layer.obj_ctx_rnn.weight_hh_l0_reverse": (32, 8),
              "context_layer.decoder_rnn.obj_embed.weight": (6, 6),
              "context_layer.decoder_rnn.input_linearity.weight": (48, 8 + 150 + 6),
              "context_layer.decoder_rnn.state_linearity.weight": (40, 8),
              "context_layer.pos_embed.1.running_var": (32,),
              "context_layer.edge_ctx_rnn.bias_hh_l0": (32,), "context_layer.lin_edge_h.weight": (8, 16),
              "post_emb.weight": (16, 8), "post_cat.weight": (16, 16), "rel_compress.weight": (4, 16),
              "freq_bias.obj_baseline.weight": (25, 4)}
    assert {key: tuple(state[key].shape) for key in shapes} == shapes
    assert not any(key.startswith("up_dim") for key in state)
    other = MotifPredictor(MotifsConfig(**{**TINY, "union_dim": 12, "use_bias": False, "effect_analysis": False}))
    assert other.up_dim.weight.shape == (16, 12)
    assert not any("freq_bias" in key or "untreated" in key for key in other.state_dict())


def test_initialisation_follows_layer_init():
    model = tiny("predcls")
    assert model.post_emb.bias.abs().sum() == 0 and model.rel_compress.bias.abs().sum() == 0
    decoder = model.context_layer.decoder_rnn
    assert decoder.input_linearity.bias.abs().sum() == 0 and decoder.state_linearity.bias.abs().sum() == 0
    assert model.freq_bias.obj_baseline.weight.abs().sum() == 0  # no statistics given
    big = MotifPredictor()  # post_emb ~ N(0, 10 / sqrt(512) = 0.442)
    assert big.post_emb.weight.std().item() == pytest.approx(10 / math.sqrt(512), rel=0.02)


def test_word_vectors_initialise_the_three_embeddings():
    vectors, start = torch.randn(5, 6), torch.randn(6)
    model = MotifPredictor(MotifsConfig(**TINY), word_vectors=vectors, start_vector=start)
    context = model.context_layer
    assert torch.equal(context.obj_embed1.weight, vectors) and torch.equal(context.obj_embed2.weight, vectors)
    assert torch.equal(context.decoder_rnn.obj_embed.weight, torch.cat([start[None], vectors]))


def test_class_word_vectors_fall_back_to_the_longest_word():
    """"traffic light" -> "traffic"; "street lamp" -> "street" (absent, though "lamp" is there) -> random."""
    lookup = {"man": torch.ones(3), "traffic": torch.full((3,), 2.0), "lamp": torch.zeros(3)}
    names = ["__background__", "man", "traffic light", "street lamp"]
    vectors = class_word_vectors(names, lookup, dim=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vectors[1], torch.ones(3)) and torch.equal(vectors[2], torch.full((3,), 2.0))
    random = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vectors[0], random[0]) and torch.equal(vectors[3], random[3])


# ---------------------------------------------------------------- hand-worked pieces


def test_box_encoding_of_one_box():
    """Box (10, 20, 49, 99) in a 200 x 100 (h x w) image: w = 40, h = 80 (+1 pixel), centre (30, 60)."""
    info = encode_box_info(torch.tensor([[10.0, 20.0, 49.0, 99.0]]), (200, 100))
    expected = [40 / 100, 80 / 200, 30 / 100, 60 / 200, 10 / 100, 20 / 200, 49 / 100, 99 / 200, 3200 / 20000]
    assert info.tolist() == [pytest.approx(expected)]


def test_objects_run_right_to_left():
    """Centres x 50, 10, 90, 30 -> 90, 50, 30, 10."""
    boxes = torch.tensor([[40.0, 0, 60, 5], [0, 0, 20, 5], [85, 0, 95, 5], [20, 0, 40, 5]])
    assert leftright_order(boxes).tolist() == [2, 0, 3, 1]


def test_frequency_log_dist_by_hand():
    """Pair (1, 1): predicates 1, 2 seen 3 and 1 times, 3 overlapping box pairs -> (3 + 1, 3, 1) / 8;
    an unseen pair: (0 + 1, 0, 0) / 1."""
    fg = np.zeros((2, 2, 3), dtype=np.int64)
    fg[1, 1] = [0, 3, 1]
    bg = np.zeros((2, 2), dtype=np.int64)
    bg[1, 1] = 3
    dist = frequency_log_dist(fg, bg)
    assert dist[1, 1].tolist() == pytest.approx([math.log(0.5 + 1e-3), math.log(0.375 + 1e-3),
                                                 math.log(0.125 + 1e-3)])
    assert dist[0, 1].tolist() == pytest.approx([math.log(1.001), math.log(1e-3), math.log(1e-3)])
    bias = FrequencyBias(2, 3, dist)
    rows = bias.index_with_labels(torch.tensor([[1, 1], [0, 1]]))
    assert torch.equal(rows, torch.stack([dist[1, 1], dist[0, 1]]))
    assert bias.obj_baseline.weight.requires_grad  # SGB: a trainable nn.Embedding, only initialised


def test_sgb_statistics_by_hand():
    """Boxes 0 and 1 overlap, 2 touches nothing: bg counts (0, 1) and (1, 0); the relation between
    non-overlapping 0 and 2 still counts in fg. An image with no overlap counts all ordered pairs."""
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [50, 50, 60, 60]], dtype=np.float64)
    first = (np.array([1, 2, 2]), boxes, np.array([[0, 1, 1], [0, 2, 2], [0, 1, 1]]))
    touching = np.array([[0, 0, 10, 10], [10, 0, 20, 10]], dtype=np.float64)  # zero-area contact: no overlap
    second = (np.array([1, 1]), touching, np.array([[1, 0, 2]]))
    fg, bg = sgb_statistics([first, second], num_classes=3, num_predicates=3)
    assert fg[1, 2].tolist() == [0, 2, 1] and fg[1, 1].tolist() == [0, 0, 1] and fg.sum() == 4
    assert bg.tolist() == [[0, 0, 0], [0, 2, 1], [0, 1, 0]]


def test_later_nms_by_hand():
    """Two objects with the same boxes: 0 takes class 1 (0.6), which suppresses class 1 of object 1,
    left with class 2. With a single foreground class object 1 ends as background (SGB's quirk)."""
    boxes = torch.tensor([[0.0, 0, 10, 10]]).expand(2, 3, 4)
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.05, 0.55, 0.4]])
    assert later_nms(boxes, probs.log(), 0.5).tolist() == [1, 2]
    apart = torch.tensor([[[0.0, 0, 10, 10]] * 3, [[20.0, 20, 30, 30]] * 3])
    assert later_nms(apart, probs.log(), 0.5).tolist() == [1, 1]
    assert later_nms(boxes[:, :2], torch.tensor([[0.0, 2.0], [0.0, 1.0]]), 0.5).tolist() == [1, 0]


def test_to_onehot():
    assert to_onehot(torch.tensor([2, 0]), 3).tolist() == [[-1000, -1000, 1000], [1000, -1000, -1000]]


def test_decoder_feeds_its_previous_class():
    """Evaluation: step 1 reads the "start" row, step 2 the row of step 1's foreground argmax + 1."""
    torch.manual_seed(0)
    decoder = DecoderRNN(num_classes=5, embed_dim=3, inputs_dim=4, hidden_dim=6, rnn_drop=0.2, nms_thresh=0.5).eval()
    inputs = torch.randn(2, 4)
    dists, preds = decoder([inputs])
    state = memory = torch.zeros(1, 6)
    previous = decoder.obj_embed.weight[:1]
    for step in range(2):
        state, memory = decoder.lstm_equations(torch.cat((inputs[step:step + 1], previous), 1), state, memory, None)
        logits = decoder.out_obj(state)
        assert torch.allclose(dists[0][step], logits[0], atol=1e-6)
        best = int(logits[0, 1:].argmax()) + 1
        assert int(preds[0][step]) == best
        previous = decoder.obj_embed.weight[best + 1: best + 2]


# ---------------------------------------------------------------- the three modes


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
@pytest.mark.parametrize("training", [True, False])
def test_shapes_in_each_mode(mode, training):
    model = tiny(mode).train(training)
    inputs = scene()
    if mode == "sgdet" and training:
        inputs["labels"][0][1] = 0  # a background proposal
    outputs = model(**inputs)
    assert len(outputs) == 2
    for out, k, pairs in zip(outputs, (4, 3), inputs["rel_pair_idxs"], strict=True):
        assert out["obj_logits"].shape == (k, 5) and out["obj_preds"].shape == (k,)
        assert out["rel_logits"].shape == (len(pairs), 4) and out["obj_preds"].dtype == torch.int64


def test_predcls_returns_the_ground_truth_labels():
    inputs = scene()
    for training in (True, False):
        outputs = tiny("predcls").train(training)(**inputs)
        for out, labels in zip(outputs, inputs["labels"], strict=True):
            assert torch.equal(out["obj_preds"], labels)
            assert torch.equal(out["obj_logits"], to_onehot(labels, 5))


def test_training_feeds_the_labels_and_fills_background():
    model = tiny("sgdet").train()
    inputs = scene()
    inputs["labels"][0] = torch.tensor([3, 0, 2, 0])
    out = model(**inputs)[0]
    assert out["obj_preds"][[0, 2]].tolist() == [3, 2]
    assert torch.equal(out["obj_preds"][[1, 3]], out["obj_logits"][[1, 3], 1:].argmax(1) + 1)


def test_sgdet_evaluation_applies_later_nms():
    model = tiny("sgdet").eval()
    inputs = scene(seed=3)
    with torch.no_grad():
        outputs = model(**{**inputs, "labels": None})
    for out, boxes in zip(outputs, inputs["boxes_per_class"], strict=True):
        assert torch.equal(out["obj_preds"], later_nms(boxes, out["obj_logits"], 0.5))


def test_relation_logits_add_the_frequency_bias_of_the_predicted_classes():
    model = tiny("sgcls").eval()
    torch.nn.init.normal_(model.freq_bias.obj_baseline.weight)
    inputs = scene(seed=1)
    with torch.no_grad():
        with_bias = model(**inputs)
        table = model.freq_bias.obj_baseline.weight.clone()
        model.freq_bias.obj_baseline.weight.zero_()
        without = model(**inputs)
    for a, b, pairs in zip(with_bias, without, inputs["rel_pair_idxs"], strict=True):
        classes = a["obj_preds"][pairs]
        assert torch.allclose(a["rel_logits"] - b["rel_logits"], table[classes[:, 0] * 5 + classes[:, 1]], atol=1e-5)


def test_batching_images_changes_nothing_in_evaluation():
    model = tiny("sgcls").eval()
    inputs = scene(counts=(3, 5, 4), seed=2)
    with torch.no_grad():
        together = model(**inputs)
        alone = [model(**{key: [value[i]] for key, value in inputs.items()})[0] for i in range(3)]
    for a, b in zip(together, alone, strict=True):
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def test_object_order_in_the_input_does_not_matter():
    """The LSTMs read the objects by centre x, so permuting them only permutes the outputs."""
    model = tiny("sgcls").eval()
    inputs = scene(counts=(5,), seed=4)
    perm = torch.tensor([3, 0, 4, 1, 2])
    new_index = torch.argsort(perm)  # object perm[i] becomes object i
    permuted = {key: [value[0][perm]] for key, value in inputs.items()
                if key not in ("image_sizes", "rel_pair_idxs", "union_features")}
    permuted.update(image_sizes=inputs["image_sizes"], union_features=inputs["union_features"],
                    rel_pair_idxs=[new_index[inputs["rel_pair_idxs"][0]]])
    with torch.no_grad():
        base, moved = model(**inputs)[0], model(**permuted)[0]
    assert torch.allclose(moved["obj_logits"], base["obj_logits"][perm], atol=1e-5)
    assert torch.equal(moved["obj_preds"], base["obj_preds"][perm])
    assert torch.allclose(moved["rel_logits"], base["rel_logits"], atol=1e-5)


def test_gradients_reach_the_lstms_and_rel_compress():
    model = tiny("sgcls").train()
    inputs = scene()
    outputs = model(**inputs)
    loss = sum(o["rel_logits"].logsumexp(1).sum() + o["obj_logits"].logsumexp(1).sum() for o in outputs)
    loss.backward()
    context = model.context_layer
    for parameter in (model.rel_compress.weight, model.post_cat.weight, model.post_emb.weight,
                      model.freq_bias.obj_baseline.weight, context.obj_ctx_rnn.weight_ih_l0,
                      context.obj_ctx_rnn.weight_hh_l0_reverse, context.edge_ctx_rnn.weight_ih_l0,
                      context.decoder_rnn.input_linearity.weight, context.decoder_rnn.obj_embed.weight,
                      context.obj_embed1.weight, context.obj_embed2.weight, context.pos_embed[0].weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    predcls = tiny("predcls").train()
    sum(o["rel_logits"].sum() for o in predcls(**inputs)).backward()
    assert predcls.context_layer.obj_ctx_rnn.weight_ih_l0.grad.abs().sum() > 0
    assert predcls.context_layer.decoder_rnn.input_linearity.weight.grad is None  # unused, as in SGB


def test_effect_analysis_buffers_follow_a_moving_average():
    model = tiny("predcls").train()
    inputs = scene()
    model(**inputs)
    context = model.context_layer
    x = torch.cat(inputs["roi_features"])
    embed2 = context.obj_embed2(torch.cat(inputs["labels"]))
    expected = 0.0005 * torch.cat((embed2, x), 1).mean(0)
    assert torch.allclose(context.untreated_edg_feat, expected, atol=1e-7)
    assert context.untreated_dcd_feat.abs().sum() > 0 and context.untreated_obj_feat.abs().sum() > 0


def test_missing_inputs_are_refused():
    inputs = scene()
    with pytest.raises(ValueError, match="ground-truth"):
        tiny("predcls")(**{**inputs, "labels": None})
    with pytest.raises(ValueError, match="labels in training"):
        tiny("sgcls").train()(**{**inputs, "labels": None})
    with pytest.raises(ValueError, match="union"):
        tiny("predcls")(**{**inputs, "union_features": None})
    with pytest.raises(ValueError, match="mode"):
        MotifsConfig(mode="detect")
