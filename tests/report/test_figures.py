"""Which dvclive curves are plotted, and that figures are deterministic PNGs."""

from __future__ import annotations

from itersg.report.figures import CURVE_PANELS, curve_panels, render
from itersg.report.inputs import Curve, CurveDir


def _dir(variant, names):
    return CurveDir(variant, None, [Curve(variant, n, [0.0, 1.0], [1.0, 0.5]) for n in names], {})


def test_engine_names_pick_the_training_total_loss_and_main_lr():
    names = ["loss", "loss_ce", "val/loss", "lr", "lr_backbone", "iter_per_s", "val/R@50", "val/mR@50",
             "val/mR_corrected@50", "val/seconds"]
    panels = curve_panels([_dir("r101-detr", names)])
    picked = {title: by_variant["r101-detr"].name for title, by_variant in panels.items()}
    assert picked == {"training loss": "loss", "learning rate": "lr", "validation R@50": "val/R@50",
                      "validation mR@50": "val/mR@50"}


def test_nested_names_and_missing_panels():
    panels = curve_panels([_dir("a", ["train/loss", "val/loss"]), _dir("b", ["metrics/recall@50"])])
    assert panels["training loss"]["a"].name == "train/loss"
    assert panels["validation R@50"]["b"].name == "metrics/recall@50"
    assert set(panels) == {"training loss", "validation R@50"}
    assert [title for title, _, _ in CURVE_PANELS][:2] == ["training loss", "learning rate"]


def test_render_is_a_deterministic_png():
    from matplotlib.figure import Figure

    def build():
        fig = Figure(figsize=(2, 1))
        fig.add_subplot().plot([0, 1], [1, 0])
        return fig

    first, second = render(build, "a line"), render(build, "a line")
    assert first.src == second.src and first.src.startswith("data:image/png;base64,iVBOR")
    assert first.width == 200 and first.alt == "a line"
