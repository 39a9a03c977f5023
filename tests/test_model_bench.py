"""`itersg bench infer|train|index` produce their figures (tiny sizes; speed goals live in docs/benchmarks.md)."""

import json

import h5py

from itersg.cli import main
from itersg.data.vg150 import VG150Index

SMALL = json.dumps({"hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 1, "dim_feedforward": 32,
                    "num_queries": 8, "backbone": {"small": True}, "aux_head": {"small": True}})


def _bench(args, capsys):
    assert main(["bench", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_infer_and_train_benchmarks_report_speed_and_machine(capsys):
    common = ["--batch-size", "2", "--height", "64", "--width", "80", "--iterations", "2", "--warmup", "1",
              "--overrides", SMALL]
    infer = _bench(["infer", "--variant", "vovnet39-centermask", *common], capsys)
    assert infer["ms_per_image"] > 0 and infer["precision"] == "fp32" and "CPU" in infer["machine"]
    assert infer["params"]["total"] > infer["params"]["backbone"] > 0
    train = _bench(["train", "--variant", "r101-detr", *common], capsys)
    assert train["images_per_second"] > 0 and train["batch_size"] == 2
    speaq = _bench(["train", "--variant", "r101-detr-speaq", *common], capsys)
    assert speaq["images_per_second"] > 0 and speaq["variant"] == "r101-detr-speaq"
    egtr = _bench(["train", "--variant", "egtr-r50", *common], capsys)
    assert egtr["images_per_second"] > 0 and egtr["variant"] == "egtr-r50"
    egtr = _bench(["infer", "--variant", "egtr-r50", *common], capsys)
    assert egtr["ms_per_image"] > 0 and egtr["params"]["frequency_table"] > 0


def test_index_benchmark_opens_a_real_size_index(tmp_path, capsys):
    figures = _bench(["index", "--root", str(tmp_path / "vg")], capsys)
    with h5py.File(tmp_path / "vg" / "VG-SGG-with-attri.h5") as h5:
        assert len(h5["split"]) == 108_073
    assert figures["images"] == len(VG150Index(tmp_path / "vg", "train"))  # the whole training split
    assert figures["seconds"] > 0 and figures["peak_rss_mib"] > figures["rss_before_open_mib"]
