"""params.yaml validation, defaults and the demo switch."""

from pathlib import Path

import pytest
import yaml

from itersg.config import for_pretraining, for_variant, load_params, parse_assignments, variant_recipe
from itersg.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


def test_full_defaults_are_the_published_recipe():
    params = load_params(PARAMS)
    assert params["mode"] == "full"
    assert params["train"]["iterations"] == 250_000
    assert params["train"]["batch_size"] == 12 and params["train"]["gpus"] == 4
    assert params["study"]["eval_iterations"] == [100_000, 250_000]
    # the 7 published rows, 6 of them at P5, SpeaQ and its baseline, EGTR
    assert len(params["study"]["variants"]) == 16
    assert all(v == {"alpha": 0.07, "beta": 0.75} for v in params["variants"].values())
    # SpeaQ's README recipe (the catalogue's): batch 20, 150k iterations (LR drop at 0.64 x 150k = 96k)
    for name in ("r101-detr-speaq", "r101-detr-speaq-baseline"):
        assert variant_recipe(params, name) == {"iterations": 150_000, "batch_size": 20, "eval_iterations": [150_000]}
    assert variant_recipe(params, "r101-detr") == {"iterations": 250_000, "batch_size": 12,
                                                   "eval_iterations": [100_000, 250_000]}
    assert for_variant(params, "r101-detr-speaq")["train"]["iterations"] == 150_000
    # EGTR's (catalogue): batch 64, 75 epochs of 902 iterations, its three learning rates and clip
    egtr = for_variant(params, "egtr-r50")["train"]
    assert (egtr["iterations"], egtr["batch_size"]) == (67_650, 64)
    assert {k: egtr[k] for k in ("lr", "lr_backbone", "lr_new", "clip_max_norm")} == {
        "lr": 2e-6, "lr_backbone": 2e-7, "lr_new": 2e-4, "clip_max_norm": 0.1}
    assert for_variant(params, "r101-detr")["train"]["lr"] == 1e-4  # the study's
    own = load_params(PARAMS, ["variants.egtr-r50.lr_new=1e-3"])
    assert for_variant(own, "egtr-r50")["train"]["lr_new"] == 1e-3


def test_egtr_pretrains_its_deformable_detr_with_its_own_schedule():
    params = load_params(PARAMS)
    detr = for_pretraining(params, "egtr-r50")
    assert (detr["detr_weights"]["pretrain_iterations"], detr["detr_weights"]["pretrain_batch_size"]) == (360_800, 32)
    assert {k: detr["train"][k] for k in ("lr", "lr_backbone", "lr_drop_fraction", "clip_max_norm")} == {
        "lr": 1e-4, "lr_backbone": 1e-5, "lr_drop_fraction": 0.75, "clip_max_norm": 0.1}
    assert for_pretraining(params, "r101-detr") == params  # IterativeSG's DETR: the params as they are
    demo = for_pretraining(load_params(PARAMS, ["mode=demo"]), "egtr-r50")
    assert demo["detr_weights"]["pretrain_iterations"] == 600


def test_a_variant_cannot_evaluate_past_its_own_iterations():
    with pytest.raises(UserError, match=r"variants.r101-detr-speaq.*\[200000\] exceed its training iterations"):
        load_params(PARAMS, ["variants.r101-detr-speaq.eval_iterations=[200000]"])
    # own iterations without eval_iterations: evaluated at the end
    assert variant_recipe(load_params(PARAMS, ["variants.r101-detr.iterations=17"]), "r101-detr") == {
        "iterations": 17, "batch_size": 12, "eval_iterations": [17]}
    demo = load_params(PARAMS, ["mode=demo"])
    assert variant_recipe(demo, "r101-detr-speaq") == {"iterations": 600, "batch_size": 16,
                                                        "eval_iterations": [300, 600]}


def test_demo_switch_applies_the_demo_section():
    params = load_params(PARAMS, ["mode=demo"])
    demo = yaml.safe_load(PARAMS.read_text())["demo"]
    assert params["train"]["iterations"] == demo["train"]["iterations"]
    assert params["data"]["root"] == demo["data"]["root"]
    # keys the demo section does not name keep their full-mode values
    assert params["train"]["weight_decay"] == 1.0e-4


def test_set_overrides_win_in_demo_mode():
    params = load_params(PARAMS, ["mode=demo", "train.iterations=50", "study.eval_iterations=[25, 50]"])
    assert params["train"]["iterations"] == 50
    assert params["study"]["eval_iterations"] == [25, 50]


def test_missing_keys_get_schema_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("mode: full\n")
    params = load_params(path)
    assert params["loss"]["no_object_weight"] == 0.1
    assert params["data"]["test_size"] == 800


@pytest.mark.parametrize(
    ("assignment", "key"),
    [
        ("train.itrations=5", "--set train.itrations: Additional properties"),
        ("train.iterations=abc", "--set train.iterations: expected an integer, got 'abc'"),
        ("train.batch_size=2.0", "--set train.batch_size: expected an integer, got 2.0"),
        ("train.lr=.nan", "--set train.lr: expected a finite number, got nan"),
        ("model.overrides={dropout: abc}", "--set model.overrides: key 'model.overrides.dropout': expected a finite"),
        ("variants.r101-detr.beta=-1", "--set variants.r101-detr.beta: -1"),
        ("study.variants=[resnet50]", "--set study.variants: 'resnet50' is not one of"),
        ("study.eval_iterations=[300000]", "'study.eval_iterations'"),
        ("study.eval_iterations=[60,", r"--set study.eval_iterations: the value '\[60,' is not valid YAML"),
    ],
)
def test_bad_values_name_the_key(assignment, key):
    with pytest.raises(UserError, match=key):
        load_params(PARAMS, [assignment])


def test_errors_in_the_file_name_the_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.read_text().replace("iterations: 250000", "iterations: -1"))
    with pytest.raises(UserError, match=rf"{params}: key 'train.iterations': -1 is less than"):
        load_params(params, ["train.lr=0.1"])


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="is a folder, not a params file"):
        load_params(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: [full\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(bad)
    bad.write_bytes(b"mode: demo\n# caf\xe9\n")  # Latin-1
    with pytest.raises(UserError, match=rf"{bad}: not UTF-8 text \(byte 0xe9 at offset 16\); save it as UTF-8"):
        load_params(bad)


def test_a_key_written_twice_is_an_error(tmp_path):
    # PyYAML would keep the second `train:` section and drop the first without a word
    params = tmp_path / "params.yaml"
    lines = PARAMS.read_text().splitlines()
    params.write_text("\n".join([*lines, "train:", "  lr: 0.5", ""]))
    first = next(i for i, line in enumerate(lines, 1) if line.startswith("train:"))
    with pytest.raises(UserError, match=rf"{params}: key 'train' is written twice \(lines {first} and "
                                        rf"{len(lines) + 1}\); keep one"):
        load_params(params)
    params.write_text("mode: demo\ntrain:\n  lr: 0.1\n  lr: 0.2\n")  # inside a section too
    with pytest.raises(UserError, match=r"key 'lr' is written twice \(lines 3 and 4\)"):
        load_params(params)


def test_parse_assignments_nests_keys():
    assert parse_assignments(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
    with pytest.raises(UserError):
        parse_assignments(["novalue"])


@pytest.mark.parametrize(("text", "value"), [("1e-4", 1e-4), ("-2E3", -2000.0), ("1.0e-4", 1e-4), ("12", 12),
                                             ("[3e2, 1]", [300.0, 1]), ("1e", "1e"), ("e5", "e5")])
def test_set_values_read_exponent_floats(text, value):
    assert parse_assignments([f"train.lr={text}"])["train"]["lr"] == value


def test_set_learning_rate_without_a_dot_is_a_number():
    assert load_params(PARAMS, ["train.lr=3e-4"])["train"]["lr"] == pytest.approx(3e-4)


def test_workflow_schema_is_the_package_schema():
    assert (ROOT / "workflow/schemas/params.schema.yaml").resolve() == (
        ROOT / "src/itersg/schemas/params.schema.yaml"
    ).resolve()
