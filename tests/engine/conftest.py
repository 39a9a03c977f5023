"""Shared fixtures of the engine tests: a tiny synthetic VG dataset and tiny-model params."""

from __future__ import annotations

from pathlib import Path

import pytest

from itersg.config import load_params

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
TINY_MODEL = ("model.overrides={hidden_dim: 32, nheads: 2, enc_layers: 1, dec_layers: 2, "
              "dim_feedforward: 64, num_queries: 10, backbone: {small: true}}")


@pytest.fixture(scope="session")
def synthetic_vg(tmp_path_factory) -> Path:
    """40 synthetic VG-format images of at most 64 px (made once per session)."""
    from itersg.data.synth import generate

    return generate(tmp_path_factory.mktemp("data") / "vg", images=40, seed=0, image_size=64)


def _tiny_sets(data_root: Path, *extra: str) -> list[str]:
    """``--set`` assignments of a fast demo run on ``data_root``."""
    return [
        "mode=demo", f"data.root={data_root}", "data.num_val_images=6", "data.train_min_sizes=[48, 56]",
        "data.train_max_size=64", "data.crop_resize_sizes=[48]", "data.crop_size=[32, 48]",
        "data.test_size=56", "data.test_max_size=64", "train.batch_size=4", "train.iterations=6",
        "train.checkpoint_every=2",
        "train.val_every=3", "train.val_images=4", "train.log_every=1", "train.keep_last=1",
        "study.eval_iterations=[3]", TINY_MODEL, *extra,
    ]


@pytest.fixture(scope="session")
def tiny_sets(synthetic_vg):
    """Factory: the ``--set`` assignments of a fast demo run on the synthetic data, plus ``extra``."""
    return lambda *extra: _tiny_sets(synthetic_vg, *extra)


@pytest.fixture(scope="session")
def tiny_params(tiny_sets):
    """Factory: the resolved params of ``tiny_sets(*extra)``."""
    return lambda *extra: load_params(PARAMS, tiny_sets(*extra))
