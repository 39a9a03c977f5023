"""EGTR through the demo's switch: its Deformable DETR pretrained on the demo data, EGTR trained from it,
evaluated by the same evaluator, shown in the report beside its published row and in the gallery."""

import json
from pathlib import Path

import pytest
import torch
from pipeline_helpers import run

from itersg.config import load_params
from itersg.models.weights.egtr_keys import detector_to_official
from itersg.workflow.paths import metrics_file, predictions_file

pytestmark = pytest.mark.slow

# the switch of docs/egtr.md with EGTR alone; a config file gives it the tiny demo's schedule
# (pipeline_helpers.TINY_DEMO): --config keeps numbers inside a mapping as text
SWITCH = 'demo={"study": {"variants": [egtr-r50]}}'
TINY_EGTR = "demo:\n  variants:\n    egtr-r50: {iterations: 16, batch_size: 4, eval_iterations: [8, 16]}\n"


def test_the_demo_switch_trains_and_evaluates_egtr_to_the_report(tiny_project):
    (tiny_project / "tiny_egtr.yaml").write_text(TINY_EGTR)
    run(["snakemake", "--cores", "2", "--configfile", "tiny_egtr.yaml", "--config", SWITCH], tiny_project)
    params = load_params(tiny_project / "params.yaml", ["mode=demo"])
    for iteration in (8, 16):
        metrics = json.loads((tiny_project / metrics_file(params, "egtr-r50", iteration)).read_text())
        assert metrics["status"] == "ok" and metrics["variant"] == "egtr-r50"
        assert metrics["params"]["frequency_table"] > 0 and metrics["params"]["relation_additions"] > 0
        assert 0 <= metrics["sgdet"]["R@50"] <= 1
        assert (tiny_project / predictions_file(params, "egtr-r50", iteration)).is_file()
    log = (tiny_project / "logs/demo/train/egtr-r50.log").read_text()
    assert "initialised from results/demo/deformable_detr/model_final.pth" in log and "'relation'" in log
    html = (tiny_project / "reports/demo/report.html").read_text()
    assert 'data-variant="egtr-r50"' in html and "EGTR (released checkpoint)" in html
    assert 'data-status="failed"' not in html
    assert '<figure class="graph" data-variant="egtr-r50"' in html  # its predictions in the gallery
    # `itersg predict` reads EGTR checkpoints too
    image = next((tiny_project / "results/demo/vg/VG_100K").glob("*.jpg"))
    run(["itersg", "predict", str(image), "--variant", "egtr-r50", "--checkpoint",
         "results/demo/train/egtr-r50/model_final.pth", "--out", "predicted", "--params", "params.yaml",
         "--set", "mode=demo"], tiny_project)
    graph = json.loads((tiny_project / "predicted" / f"{image.stem}.json").read_text())
    assert graph["objects"] and graph["triplets"]
    # the same weights under the reference's names, as its Lightning module saves them, evaluate the same
    _save_as_official(tiny_project / "results/demo/train/egtr-r50/model_final.pth", tiny_project / "egtr.ckpt")
    run(["itersg", "evaluate", "--variant", "egtr-r50", "--checkpoint", "egtr.ckpt", "--iteration", "16",
         "--out", "official", "--params", "params.yaml", "--set", "mode=demo"], tiny_project)
    ours = json.loads((tiny_project / metrics_file(params, "egtr-r50", 16)).read_text())["sgdet"]
    assert json.loads((tiny_project / "official/metrics.json").read_text())["sgdet"] == ours


def _save_as_official(ours: Path, official: Path) -> None:
    state = torch.load(ours, map_location="cpu", weights_only=True)["model"]
    detector = {k.removeprefix("detector."): v for k, v in state.items() if k.startswith("detector.")}
    names = detector_to_official(detector, decoder_layers=2)
    names |= {k.removeprefix("relation."): v for k, v in state.items() if k.startswith("relation.")}
    torch.save({"state_dict": {f"model.{k}": v for k, v in names.items()}}, official)
