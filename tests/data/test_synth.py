"""The synthetic dataset: exact VG150 format, deterministic, learnable structure."""

import hashlib

import h5py
import numpy as np

from itersg.cli import main
from itersg.data.synth import CLASSES, PREDICATES, is_held_out
from itersg.data.vg150 import VG150Index, load_vocabulary, load_zero_shot, predicate_frequencies


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert main(["data", "synth", "--out", str(tmp_path / name), "--images", "30", "--seed", str(seed)]) == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_files_have_the_vg150_layout(synth_vg):
    with h5py.File(synth_vg / "VG-SGG-with-attri.h5") as h5:
        assert h5["split"].dtype == np.int32 and h5["img_to_first_box"].dtype == np.int32
        assert h5["labels"].dtype == np.int64 and h5["labels"].shape[1] == 1
        assert h5["boxes_1024"].dtype == np.int32 and h5["boxes_1024"].shape[1] == 4
        assert h5["relationships"].dtype == np.int32 and h5["predicates"].dtype == np.int64
        assert {"attributes", "boxes_512", "active_object_mask"} <= set(h5)
    vocabulary = load_vocabulary(synth_vg)
    assert vocabulary.classes == CLASSES and vocabulary.predicates == PREDICATES


def test_predicates_are_long_tailed(synth_vg):
    counts = np.sort(predicate_frequencies(synth_vg, num_val_images=10))[::-1]
    assert counts[0] > 4 * counts[-1] > 0
    assert counts[:2].sum() > 0.4 * counts.sum()


def test_zero_shot_triplets_occur_in_test_never_in_train(synth_vg):
    zero_shot = {tuple(t) for t in (load_zero_shot(synth_vg) - 1).tolist()}
    assert zero_shot and all(is_held_out(s, o) for s, o, _ in zero_shot)

    def triplets(split):
        index = VG150Index(synth_vg, split, num_val_images=10)
        found = set()
        for i in range(len(index)):
            a = index.annotations(i)
            found |= {(a["labels"][s], a["labels"][o], p) for s, o, p in a["relations"]}
        return found

    assert not triplets("train") & zero_shot
    assert zero_shot <= triplets("test")
