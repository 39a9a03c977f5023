"""A step with a non-finite loss is skipped and training goes on; too many in a row stop it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from itersg.engine.loop import TrainingDiverged, train_step
from itersg.engine.runner import run_training
from itersg.engine.signals import EXIT_PREEMPTED
from itersg.precision import Precision


class ScaledSum(nn.Module):
    """outputs = weight x the sum of the images (one parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"out": self.weight * torch.stack(images).sum()}


class TargetTimesOutput:
    """loss = target x output (a NaN target gives a NaN loss and NaN gradients)."""

    def __call__(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        return {"loss_a": outputs["out"] * targets[0]["k"]}

    def weighted_total(self, losses: dict) -> torch.Tensor:
        return losses["loss_a"]


@pytest.mark.parametrize("clip", [0.0, 1.0])
@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before:UserWarning")
def test_a_non_finite_step_changes_no_weight_and_the_next_one_trains(clip):
    model, criterion = ScaledSum(), TargetTimesOutput()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    precision = Precision("fp32", torch.device("cpu"))
    images = [torch.ones(2)]
    stats, finite = train_step(model, criterion, optimizer, scheduler, precision, images,
                               [{"k": torch.tensor(float("nan"))}], clip)
    assert not finite and torch.isnan(stats["loss"]) and model.weight.item() == 1.0
    assert scheduler.last_epoch == 1  # the schedule still advances, as with a skipped fp16 step
    stats, finite = train_step(model, criterion, optimizer, scheduler, precision, images, [{"k": torch.tensor(1.0)}],
                               clip)
    assert finite and stats["grad_norm"].item() == 2.0
    assert model.weight.item() == pytest.approx(1.0 - 0.05 * min(2.0, clip or 2.0))


def test_training_stops_after_too_many_non_finite_steps_in_a_row(tiny_params, tmp_path):
    params = tiny_params("train.iterations=8", "study.eval_iterations=[8]", "train.max_nonfinite_steps=3")
    assert run_training(params, "train", tmp_path, variant="r101-detr", stop_at=2) == EXIT_PREEMPTED
    newest = tmp_path / "checkpoints" / "model_0000002.pth"
    state = torch.load(newest, weights_only=True)
    state["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                      for k, v in state["model"].items()}
    torch.save(state, newest)
    with pytest.raises(TrainingDiverged, match=r"not finite for 3 steps in a row \(up to iteration 5"):
        run_training(params, "train", tmp_path, variant="r101-detr")
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    skipped = [r for r in records if r["event"] == "skipped_step"]
    assert [(r["iteration"], r["in_a_row"]) for r in skipped] == [(3, 1), (4, 2), (5, 3)]
