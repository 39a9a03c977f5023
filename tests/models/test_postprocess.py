"""Test-time scene-graph construction on hand-made outputs (IterativeSG's inference procedure)."""

from __future__ import annotations

import pytest
import torch

from itersg.models.postprocess import pairwise_iou, postprocess_detections, postprocess_scene_graphs

NUM_CLASSES, NUM_PREDICATES = 3, 2


def logits(label: int, score: float, width: int) -> list[float]:
    """Log-probabilities whose softmax puts ``score`` on ``label`` and the rest on the last class."""
    probs = torch.full((width,), 1e-12)
    probs[label], probs[-1] = score, 1.0 - score
    return probs.log().tolist()


def outputs_from(queries: list[dict]) -> dict:
    """Queries as dicts of (label, score) and cxcywh boxes -> a batch-of-one model output."""
    out = {
        "pred_sub_logits": [logits(*q["sub"], NUM_CLASSES + 1) for q in queries],
        "pred_obj_logits": [logits(*q["obj"], NUM_CLASSES + 1) for q in queries],
        "pred_rel_logits": [logits(*q["rel"], NUM_PREDICATES + 1) for q in queries],
        "pred_sub_boxes": [q["sub_box"] for q in queries],
        "pred_obj_boxes": [q["obj_box"] for q in queries],
    }
    return {k: torch.tensor([v]) for k, v in out.items()}


A, A_SHIFTED = [0.25, 0.25, 0.3, 0.3], [0.26, 0.25, 0.3, 0.3]
B, C, C_SHIFTED = [0.75, 0.75, 0.3, 0.3], [0.75, 0.25, 0.2, 0.2], [0.76, 0.25, 0.2, 0.2]


@pytest.fixture
def merged():
    queries = [
        {"sub": (0, 0.9), "sub_box": A, "obj": (1, 0.8), "obj_box": B, "rel": (0, 0.9)},
        {"sub": (0, 0.7), "sub_box": A_SHIFTED, "obj": (1, 0.85), "obj_box": B, "rel": (0, 0.95)},
        {"sub": (0, 0.7), "sub_box": A_SHIFTED, "obj": (1, 0.83), "obj_box": B, "rel": (1, 0.6)},
        {"sub": (2, 0.5), "sub_box": A, "obj": (1, 0.4), "obj_box": C, "rel": (1, 0.99)},
        {"sub": (0, 0.3), "sub_box": A_SHIFTED, "obj": (1, 0.35), "obj_box": C_SHIFTED, "rel": (0, 0.9)},
    ]
    (result,) = postprocess_scene_graphs(outputs_from(queries), [(50, 100)], [(100, 200)], [42])
    return result


def test_entities_are_merged_by_class_aware_nms(merged):
    # kept, by score: A as class 0 (q0), B (q1's object), A as class 2 (q3: same box, other class), C
    assert merged["image_id"] == 42
    assert merged["labels"].tolist() == [0, 1, 2, 1]
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.85, 0.5, 0.4])
    # normalised -> transformed image (100 x 50) -> original image (200 x 100)
    torch.testing.assert_close(merged["boxes"][0], torch.tensor([20.0, 10.0, 80.0, 40.0]))
    torch.testing.assert_close(merged["boxes"][2], merged["boxes"][0])


def test_rows_use_the_mapped_boxes_and_the_queries_own_scores(merged):
    # q1 repeats q0's (sub, obj, predicate) after merging and is dropped; q2 keeps the pair with
    # another predicate; q3 pairs with the class-2 copy of A; q4 ranks by its own low scores.
    assert merged["rel_pairs"].tolist() == [[0, 1], [0, 1], [2, 3], [0, 3]]
    expected = [0.9 * 0.9 * 0.8, 0.6 * 0.7 * 0.83, 0.99 * 0.5 * 0.4, 0.9 * 0.3 * 0.35]
    assert merged["triplet_scores"].tolist() == pytest.approx(expected, rel=1e-5)
    assert merged["rel_scores"].shape == (4, NUM_PREDICATES + 1)
    assert merged["rel_scores"].argmax(1).tolist() == [0, 1, 1, 0]
    torch.testing.assert_close(merged["rel_scores"].sum(1), torch.ones(4))


def test_contract_types(merged):
    assert merged["boxes"].dtype == torch.float32 and merged["scores"].dtype == torch.float32
    assert merged["labels"].dtype == torch.int64 and merged["rel_pairs"].dtype == torch.int64
    assert merged["rel_scores"].dtype == torch.float32 and merged["triplet_scores"].dtype == torch.float32


@pytest.mark.parametrize(("k1_score", "k2_score", "expected"), [(0.9, 0.8, 0), (0.8, 0.9, 0)])
def test_equal_iou_ties_go_to_the_first_kept_box(k1_score, k2_score, expected):
    # x overlaps k1 and k2 with the same IoU (0.6); k1 and k2 overlap by 1/3, so NMS keeps both
    k1, k2, x = [0.25, 0.25, 0.5, 0.5], [0.5, 0.25, 0.5, 0.5], [0.375, 0.25, 0.5, 0.5]
    queries = [
        {"sub": (0, score), "sub_box": box, "obj": (1, 0.6), "obj_box": [ox, 0.9, 0.1, 0.1], "rel": (0, 0.9)}
        for score, box, ox in ((k1_score, k1, 0.1), (k2_score, k2, 0.5), (0.7, x, 0.9))
    ]
    (result,) = postprocess_scene_graphs(outputs_from(queries), [(64, 64)], [(64, 64)])
    assert result["labels"].tolist()[:2] == [0, 0] and len(result["labels"]) == 5
    x_row = result["triplet_scores"].tolist().index(pytest.approx(0.9 * 0.7 * 0.6))
    # the first kept box is the higher-scoring of k1 and k2, whichever that is
    assert result["rel_pairs"][x_row, 0].item() == expected
    assert result["scores"][0].item() == pytest.approx(max(k1_score, k2_score))


def test_at_most_max_triplets_rows_sorted_by_score():
    torch.manual_seed(0)
    queries = 400
    cells = torch.stack(torch.meshgrid(torch.arange(40), torch.arange(20), indexing="ij"), -1).reshape(-1, 2)
    centres = (cells.float() + 0.5) / torch.tensor([40.0, 20.0])
    boxes = torch.cat([centres, torch.tensor([[0.02, 0.04]]).expand(800, 2)], 1)  # 800 disjoint boxes
    out = {
        "pred_sub_logits": torch.randn(1, queries, NUM_CLASSES + 1),
        "pred_obj_logits": torch.randn(1, queries, NUM_CLASSES + 1),
        "pred_rel_logits": torch.randn(1, queries, NUM_PREDICATES + 1),
        "pred_sub_boxes": boxes[:queries][None], "pred_obj_boxes": boxes[queries:][None],
    }
    (result,) = postprocess_scene_graphs(out, [(32, 32)], [(32, 32)])
    scores = result["triplet_scores"]
    assert len(scores) == 300 and len(result["boxes"]) == 800
    assert torch.all(scores[:-1] >= scores[1:])
    s = out["pred_sub_logits"][0].softmax(-1)[:, :-1].max(-1).values
    o = out["pred_obj_logits"][0].softmax(-1)[:, :-1].max(-1).values
    r = out["pred_rel_logits"][0].softmax(-1)[:, :-1].max(-1).values
    torch.testing.assert_close(scores, (r * s * o).sort(descending=True).values[:300])
    (few,) = postprocess_scene_graphs(out, [(32, 32)], [(32, 32)], max_triplets=5)
    torch.testing.assert_close(few["triplet_scores"], scores[:5])


def test_boxes_are_clipped_and_empty_ones_dropped_with_their_rows():
    queries = [
        {"sub": (0, 0.9), "sub_box": [0.5, 0.5, 0.0, 0.2], "obj": (1, 0.8), "obj_box": B, "rel": (0, 0.9)},
        {"sub": (2, 0.7), "sub_box": [0.95, 0.5, 0.2, 0.2], "obj": (1, 0.6), "obj_box": C, "rel": (1, 0.9)},
    ]
    (result,) = postprocess_scene_graphs(outputs_from(queries), [(10, 20)], [(10, 20)])
    # the zero-width box is gone; the rows are re-indexed into the remaining boxes
    assert result["labels"].tolist() == [1, 2, 1]
    assert result["rel_pairs"].tolist() == [[1, 2]]
    torch.testing.assert_close(result["boxes"][1], torch.tensor([17.0, 4.0, 20.0, 6.0]))  # x2 1.05 -> W


def test_batches_give_one_result_per_image():
    queries = [{"sub": (0, 0.9), "sub_box": A, "obj": (1, 0.8), "obj_box": B, "rel": (0, 0.9)}]
    single = outputs_from(queries)
    batch = {k: torch.cat([v, v]) for k, v in single.items()}
    sizes, orig_sizes = torch.tensor([[10, 10], [20, 40]]), torch.tensor([[10, 10], [40, 80]])
    results = postprocess_scene_graphs(batch, sizes, orig_sizes, image_ids=[5, 6])
    assert [r["image_id"] for r in results] == [5, 6]
    torch.testing.assert_close(results[1]["boxes"], results[0]["boxes"] * torch.tensor([8.0, 4.0, 8.0, 4.0]))


def test_pairwise_iou_is_zero_without_intersection():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    iou = pairwise_iou(boxes, boxes)
    assert iou[0, 1].item() == pytest.approx(1 / 7)
    assert iou[2, 2].item() == 0.0 and not torch.isnan(iou).any()


def test_detr_detections_are_scaled_to_the_original_image():
    out = {"pred_logits": torch.tensor([[logits(2, 0.7, NUM_CLASSES + 1)]]),
           "pred_boxes": torch.tensor([[[0.5, 0.5, 0.5, 0.5]]])}
    (result,) = postprocess_detections(out, [(10, 20)], [(100, 200)], [3])
    assert result["image_id"] == 3 and result["labels"].tolist() == [2]
    assert result["scores"].tolist() == pytest.approx([0.7])
    torch.testing.assert_close(result["boxes"], torch.tensor([[50.0, 25.0, 150.0, 75.0]]))


def _merge_entities_dense(boxes, scores, labels, iou_threshold):
    """The reference's way: IoU of every box with every kept box, other classes masked with -1."""
    from torchvision.ops import batched_nms

    keep = batched_nms(boxes.float(), scores, labels, iou_threshold)
    iou = pairwise_iou(boxes, boxes[keep]).masked_fill(labels[:, None] != labels[keep][None, :], -1.0)
    return keep, iou.argmax(dim=1)


@pytest.mark.parametrize("seed", range(20))
def test_merge_entities_equals_the_dense_all_pairs_version(seed):
    from itersg.models.postprocess import merge_entities

    generator = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 600, (1,), generator=generator))
    corners = torch.rand(n, 2, generator=generator) * 0.8
    boxes = torch.cat([corners, corners + 0.02 + torch.rand(n, 2, generator=generator) * 0.3], dim=1)
    duplicates = torch.randint(0, n, (n // 3,), generator=generator)  # exact copies: IoU ties
    boxes[torch.randint(0, n, (n // 3,), generator=generator)] = boxes[duplicates]
    labels = torch.randint(0, 1 + seed % 7 * 20, (n,), generator=generator)
    scores = torch.rand(n, generator=generator).round(decimals=1)  # score ties too
    keep, assignment = merge_entities(boxes, scores, labels, 0.5)
    dense_keep, dense_assignment = _merge_entities_dense(boxes, scores, labels, 0.5)
    assert keep.equal(dense_keep)
    assert assignment.equal(dense_assignment)


def test_a_batch_gives_the_graphs_of_its_images_one_by_one():
    generator = torch.Generator().manual_seed(0)
    batch, queries = 5, 40
    outputs = {
        "pred_sub_logits": torch.randn(batch, queries, NUM_CLASSES + 1, generator=generator) * 3,
        "pred_obj_logits": torch.randn(batch, queries, NUM_CLASSES + 1, generator=generator) * 3,
        "pred_rel_logits": torch.randn(batch, queries, NUM_PREDICATES + 1, generator=generator) * 3,
        "pred_sub_boxes": torch.rand(batch, queries, 4, generator=generator) * 0.5 + 0.2,
        "pred_obj_boxes": torch.rand(batch, queries, 4, generator=generator) * 0.5 + 0.2,
    }
    sizes, orig_sizes = [(80, 100)] * batch, [(60 + 10 * i, 75) for i in range(batch)]
    together = postprocess_scene_graphs(outputs, sizes, orig_sizes)
    for i in range(batch):
        alone = postprocess_scene_graphs({k: v[i:i + 1] for k, v in outputs.items()}, sizes[i:i + 1],
                                         orig_sizes[i:i + 1], [i])[0]
        assert alone.keys() == together[i].keys()
        for key, value in alone.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(together[i][key])), key
