"""The metrics bench: the vectorised path agrees with the loop oracle and is much faster."""

from __future__ import annotations

from oracle import oracle_scores

from itersg.evaluation.bench import bench_metrics, synthetic_evaluation_set


def test_synthetic_set_has_vg_sizes():
    images, zero_shot = synthetic_evaluation_set(50, seed=1)
    assert len(images) == 50 and zero_shot.shape[1] == 3 and len(zero_shot) > 0
    _, pred = images[0]
    assert pred["rel_scores"].shape == (300, 51) and pred["boxes"].shape == (100, 4)
    assert 8 < sum(len(g["labels"]) for g, _ in images) / 50 < 14
    assert 4 < sum(len(g["relations"]) for g, _ in images) / 50 < 8


def test_bench_against_the_oracle():
    result = bench_metrics(num_images=150, seed=0, oracle=oracle_scores)
    assert result["max_abs_difference"] <= 1e-9
    assert 0 < result["sgdet"]["R@100"] < 1
    # the full-size figure (5000 images) is measured by tests/evaluation/bench_vs_oracle.py; this small
    # run on a shared CI machine only checks the order of magnitude
    assert result["speedup"] > 8, result


def test_bench_command_outside_a_source_checkout_times_the_fast_metrics(tmp_path, monkeypatch, capsys):
    import json

    from itersg.cli import main

    monkeypatch.chdir(tmp_path)  # no tests/evaluation/oracle.py here
    assert main(["bench", "metrics", "--images", "20"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_images"] == 20 and result["fast_seconds"] > 0 and "oracle_seconds" not in result


def test_box_ap_bench_compares_the_two_implementations():
    from itersg.evaluation.bench import bench_box_ap

    result = bench_box_ap(40)
    assert result["faster"]["seconds"] > 0 and result["pycocotools"]["seconds"] > 0
    assert result["max_abs_difference"] <= 1e-12
    assert result["faster"]["bbox"].keys() == result["pycocotools"]["bbox"].keys()


def test_evaluate_bench_times_every_step_of_the_evaluation_after_the_model(tmp_path, capsys):
    import json

    from itersg.cli import main

    assert main(["bench", "evaluate", "--images", "30", "--folder", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    ms = result["ms_per_image"]
    assert set(ms) == {"postprocess", "write_predictions", "read_and_metrics", "total"}
    assert all(value > 0 for value in ms.values())
    assert abs(ms["total"] - sum(v for k, v in ms.items() if k != "total")) < 1e-9
    assert result["predictions_bytes_per_image"] > 1000 and result["threads"] == 1
    # the synthetic outputs sit on the GT boxes: the post-processed graphs find part of the GT
    assert 0 < result["R@100"] < 100 and 0 < result["AP"] < 100
    assert list(tmp_path.iterdir()) == []  # the predictions file was temporary
