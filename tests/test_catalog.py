"""The variant catalogue: the one list of variants that the schema, the registry and the report follow."""

from __future__ import annotations

import dataclasses

import pytest

from itersg.catalog import STUDY_LEVEL_AS_RUN, VARIANTS, get_variant
from itersg.config import load_params, params_schema
from itersg.errors import UserError
from itersg.report.tables import STUDY_REFS, published_row, reference_rows
from itersg.workflow.paths import initial_weights

PARAMS = "params.yaml"


def test_the_schema_names_exactly_the_catalogued_variants_in_order():
    assert params_schema()["$defs"]["variant_name"]["enum"] == list(VARIANTS)


def test_every_published_ref_has_rows_in_the_reference_table():
    refs = {row["ref"] for row in reference_rows()}
    assert {v.published for v in VARIANTS.values() if v.published} <= refs
    # each ETRI row A-G is reproduced by exactly one variant as it was run (and fixed by at most one -p5)
    as_run = [v for v in VARIANTS.values() if v.published in STUDY_REFS and v.method == "iterativesg"
              and not v.name.endswith("-p5")]
    assert sorted(v.published for v in as_run) == list(STUDY_REFS)


@pytest.mark.parametrize("depth", [39, 57, 99])
@pytest.mark.parametrize("detector", ["detr", "centermask"])
def test_the_published_vovnet_rows_read_p7_as_run_and_the_p5_variants_differ_only_there(depth, detector):
    as_run, fixed = get_variant(f"vovnet{depth}-{detector}"), get_variant(f"vovnet{depth}-{detector}-p5")
    assert as_run.transformer_level == STUDY_LEVEL_AS_RUN == "P7" and fixed.transformer_level == "P5"
    assert dataclasses.replace(fixed, name=as_run.name, transformer_level="P7") == as_run
    # the fix is compared with the row it fixes
    assert published_row(fixed.name, 250_000, reference_rows()) == published_row(as_run.name, 250_000,
                                                                                  reference_rows()) is not None


def test_the_default_study_runs_the_published_rows_and_their_p5_versions():
    params = load_params(PARAMS)
    study = params["study"]["variants"]
    published = [name for name, v in VARIANTS.items() if v.published in STUDY_REFS and v.method == "iterativesg"
                 and v.transformer_level != "P5"]
    assert set(published) <= set(study)
    assert {f"{name}-p5" for name in published if name.startswith("vovnet")} <= set(study)
    assert params["model"]["transformer_level"] is None  # each variant's own


def test_each_variant_starts_from_the_detector_its_catalogue_entry_names():
    released, pretrained = load_params(PARAMS), load_params(PARAMS, ["detr_weights.source=pretrain"])
    starts = {name: (initial_weights(released, name), initial_weights(pretrained, name)) for name in VARIANTS}
    assert {name for name, files in starts.items() if files[0]} == {
        "r101-detr", "r101-detr-speaq", "r101-detr-speaq-baseline", "egtr-r50"}
    assert starts["r101-detr"] == (["resources/weights/iterativesg_detr_vg.pth"],
                                   ["results/full/weights/r101-detr_init.pth"])
    assert starts["egtr-r50"] == (["resources/weights/egtr_detr_vg.ckpt"],
                                  ["results/full/deformable_detr/model_final.pth"])


def test_the_speaq_recipe_comes_from_the_catalogue_and_params_win():
    from itersg.config import variant_recipe

    params = load_params(PARAMS)
    assert variant_recipe(params, "r101-detr-speaq") == {"iterations": 150_000, "batch_size": 20,
                                                         "eval_iterations": [150_000]}
    assert variant_recipe(params, "vovnet39-detr-p5") == {"iterations": 250_000, "batch_size": 12,
                                                          "eval_iterations": [100_000, 250_000]}
    own = load_params(PARAMS, ["variants.r101-detr-speaq.batch_size=8"])
    assert variant_recipe(own, "r101-detr-speaq")["batch_size"] == 8


def test_an_unknown_variant_is_one_line_naming_the_choices():
    with pytest.raises(UserError, match=r"unknown variant 'vovnet40-detr'; choose one of \['r101-detr'"):
        get_variant("vovnet40-detr")
