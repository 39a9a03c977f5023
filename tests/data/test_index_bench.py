"""The index benchmark writes a consistent VG150-layout folder and measures it in a fresh process."""

from pathlib import Path

import h5py

from itersg.data.bench import bench_index
from itersg.data.vg150 import VG150Index


def test_bench_index_on_a_small_folder(tmp_path):
    result = bench_index(tmp_path, num_images=600, num_boxes=6000, num_relations=3000)
    with h5py.File(tmp_path / "VG-SGG-with-attri.h5") as h5:
        assert len(h5["split"]) == 600 and len(h5["labels"]) == 6000 and len(h5["predicates"]) == 3000
        assert h5["attributes"].shape == (6000, 10) and h5["active_object_mask"].dtype == bool
    train = VG150Index(tmp_path, "train", num_val_images=5000)
    assert result["images"] == len(train) == 0  # 5000 val images > what split 0 holds
    result = bench_index(tmp_path, num_images=600, num_boxes=6000, num_relations=3000, split="test")
    test = VG150Index(tmp_path, "test")
    assert result["images"] == len(test) > 0
    relations = test.annotations(0)["relations"]
    assert (relations[:, :2] < len(test.annotations(0)["labels"])).all()
    assert 0 < result["seconds"] < 2 and result["peak_rss_mib"] < 1024
    assert 0 < result["validate_seconds"] < 2 and result["validate_peak_rss_mib"] < 1024


def test_loader_bench_times_the_training_data_path(tmp_path):
    from itersg.config import load_params
    from itersg.data.bench import bench_loader

    data = load_params(Path(__file__).resolve().parents[2] / "params.yaml", ["mode=full"])["data"]
    result = bench_loader(tmp_path / "vg", workers=1, transform_sizes=data, num_images=30, batch_size=2, batches=3)
    assert result["images_timed"] == 6 and result["workers"] == 1
    assert result["images_per_second"] > 0 and result["cpu_seconds_per_image"] > 0
    assert (tmp_path / "vg" / "VG-SGG-with-attri.h5").is_file()


def test_an_unreadable_sizes_file_means_the_folder_is_written_again(tmp_path):
    (tmp_path / "bench-sizes.json").write_text("sizes: unknown\n")
    result = bench_index(tmp_path, num_images=200, num_boxes=2000, num_relations=1000, split="test")
    assert result["images"] > 0 and (tmp_path / "bench-sizes.json").read_text() == "[200, 2000, 1000]"
