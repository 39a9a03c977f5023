"""matplotlib figures of the report, each returned as a ``data:`` URI so the HTML stays one file.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, so no global backend switch) and rasterised
by Agg to PNG; PNG metadata is left out so the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure

from itersg.catalog import VARIANTS
from itersg.report.inputs import Curve, CurveDir
from itersg.report.tables import STUDY_REFS, PredicateOrder, ResultRow, variant_order

DPI = 160  # PNG pixels per inch; the page shows 100 CSS px per inch, so figures stay sharp on HiDPI screens
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
GROUP_SHADES = {"head": "#e8f0fb", "body": "#f3f3f3", "tail": "#fbeee6"}
STYLE = {
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "legend.frameon": False,
}


@dataclass(frozen=True)
class Image:
    """An embedded figure: ``src`` is a PNG data URI, ``width`` its CSS width in pixels."""

    src: str
    alt: str
    width: int


def variant_color(variant: str) -> str:
    """A fixed colour per variant so every figure uses the same one."""
    known = list(VARIANTS)
    index = known.index(variant) if variant in known else len(known) + sum(map(ord, variant))
    return PALETTE[index % len(PALETTE)]


def render(build: Callable[[], Figure], alt: str) -> Image:
    """Build a figure under the report style and rasterise it with Agg to a PNG data URI."""
    with matplotlib.rc_context(STYLE):
        fig = build()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    width = round(fig.get_figwidth() * 100)
    return Image("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), alt, width)


# ----------------------------------------------------------------------------- per-predicate recall


def predicate_recall_figure(row: ResultRow, order: PredicateOrder) -> Image:
    """Bars of per-predicate recall (corrected convention) at K = 50 and 100, most frequent first."""
    per_predicate = row.metrics.data["per_predicate_recall"]

    def build() -> Figure:
        fig = Figure(figsize=(13, 3.3), layout="constrained")
        ax = fig.add_subplot()
        positions = range(len(order.names))
        _shade_groups(ax, order)
        color = variant_color(row.variant)
        highest = 0.0
        for offset, k, alpha in ((-0.2, 50, 0.55), (0.2, 100, 1.0)):
            values = [100 * (per_predicate[str(k)].get(name) or 0) for name in order.names]
            ax.bar([p + offset for p in positions], values, width=0.4, color=color, alpha=alpha,
                   label=f"R@{k} per predicate")
            highest = max([highest, *values])
        ax.set_ylim(0, max(5.0, 1.15 * highest))  # headroom for the group labels
        labels = [f"{n} ({f:,})" if f is not None else n for n, f in zip(order.names, order.frequencies)]
        ax.set_xticks(list(positions), labels, rotation=70, ha="right", fontsize=7)
        ax.set_xlim(-0.7, len(order.names) - 0.3)
        ax.set_ylabel("recall (%)")
        ax.set_title(f"{row.variant} @ {row.iteration:,} — per-predicate recall (corrected mR convention)",
                     loc="left", fontsize=10)
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, fontsize=8)
        return fig

    ordered = "by training frequency" if any(order.groups) else "by name"
    alt = (f"Per-predicate recall at K=50 and K=100 of {row.variant} at iteration {row.iteration}, "
           f"{len(order.names)} predicates ordered {ordered}")
    return render(build, alt)


def _shade_groups(ax, order: PredicateOrder) -> None:
    for group, shade in GROUP_SHADES.items():
        members = [i for i, g in enumerate(order.groups) if g == group]
        if members:
            ax.axvspan(min(members) - 0.5, max(members) + 0.5, color=shade, zorder=0, lw=0)
            ax.text(min(members) - 0.4, 0.98, group, transform=ax.get_xaxis_transform(),
                    ha="left", va="top", fontsize=8, fontweight="bold", color="#555555")


# ---------------------------------------------------------------------------------- training curves

def _base(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _training_loss(name: str) -> bool:
    validation = name.split("/", 1)[0].lower() in ("val", "valid", "validation")
    return _base(name) in ("loss", "total_loss", "loss_total") and not validation


def _learning_rate(name: str) -> bool:
    return _base(name) in ("lr", "learning_rate") or _base(name).startswith("lr_")


def _recall_at_50(name: str) -> bool:
    return _base(name).lower() in ("r@50", "r_50", "r50", "recall@50")


def _mean_recall_at_50(name: str) -> bool:
    return _base(name).lower() in ("mr@50", "mr_50", "mr50", "mean_recall@50")


# (title, y label, matcher of the dvclive metric name) of the curve panels, in display order.
CURVE_PANELS = (
    ("training loss", "loss", _training_loss),
    ("learning rate", "lr", _learning_rate),
    ("validation R@50", "R@50", _recall_at_50),
    ("validation mR@50", "mR@50", _mean_recall_at_50),
)


def pick_curve(curves: Sequence[Curve], matches: Callable[[str], bool]) -> Curve | None:
    """The matching curve with the fewest slashes, then the first name (``lr`` before ``lr_backbone``)."""
    candidates = [c for c in curves if matches(c.name) and c.steps]
    return min(candidates, key=lambda c: (c.name.count("/"), c.name), default=None)


def curve_panels(curve_dirs: Sequence[CurveDir]) -> dict[str, dict[str, Curve]]:
    """panel title -> variant -> the curve plotted there (panels without any curve are left out)."""
    panels: dict[str, dict[str, Curve]] = {}
    for title, _, matches in CURVE_PANELS:
        chosen = {d.variant: c for d in curve_dirs if (c := pick_curve(d.curves, matches)) is not None}
        if chosen:
            panels[title] = chosen
    return panels


def curves_figure(panels: Mapping[str, Mapping[str, Curve]]) -> Image:
    """One panel per curve kind, one line per variant."""
    labels = {title: label for title, label, _ in CURVE_PANELS}

    def build() -> Figure:
        fig = Figure(figsize=(13, 3.2), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, by_variant) in zip(axes, panels.items()):
            for variant, curve in by_variant.items():
                scale = 100.0 if "@" in labels[title] else 1.0
                ax.plot(curve.steps, [scale * v for v in curve.values], color=variant_color(variant),
                        lw=1.2, marker="o" if len(curve.steps) < 30 else None, ms=3, label=variant)
            ax.set_title(title, loc="left", fontsize=10)
            ax.set_xlabel("iteration")
            ax.set_ylabel(labels[title] + (" (%)" if "@" in labels[title] else ""))
            if title == "learning rate":
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        axes[0].legend(fontsize=8)
        return fig

    alt = "Training curves per variant: " + ", ".join(
        f"{title} ({', '.join(by_variant)})" for title, by_variant in panels.items())
    return render(build, alt)


# ------------------------------------------------------------------------------- R@50 vs speed


@dataclass(frozen=True)
class SpeedPoint:
    label: str
    seconds: float
    recall: float  # percent
    variant: str
    published: bool


def speed_points(latest: Mapping[str, ResultRow], reference: Sequence[Mapping[str, str]]) -> list[SpeedPoint]:
    """Ours (latest checkpoint per variant) and the published study rows that report both numbers."""
    points = []
    for variant, row in latest.items():
        seconds, recall = row.ours["s_per_image"].value, row.ours["R@50"].value
        if seconds is not None and recall is not None:
            label = f"{variant} @ {_short(row.iteration)}"
            points.append(SpeedPoint(label, seconds, 100 * recall, variant, False))
    # one point per published study row, coloured as the first variant that reproduces it
    first_by_ref = {}
    for variant, spec in VARIANTS.items():
        if spec.published in STUDY_REFS:
            first_by_ref.setdefault(spec.published, variant)
    for ref, variant in first_by_ref.items():
        rows = [r for r in reference if r["ref"] == ref and r["R@50"] and r["inference_s_per_img"]]
        if rows:
            best = max(rows, key=lambda r: int(r["iterations"]))
            points.append(SpeedPoint(f"{best['ref']} @ {_short(int(best['iterations']))}",
                                     float(best["inference_s_per_img"]), float(best["R@50"]), variant, True))
    return points


def _short(iteration: int) -> str:
    """``250000`` -> ``250k`` (labels in crowded plots)."""
    return f"{iteration // 1000}k" if iteration >= 1000 and iteration % 1000 == 0 else f"{iteration:,}"


def speed_figure(points: Sequence[SpeedPoint]) -> Image:
    """R@50 against seconds per image: filled = ours, hollow = published."""

    def build() -> Figure:
        fig = Figure(figsize=(9.5, 4.4), layout="constrained")
        ax = fig.add_subplot()
        for point in points:
            color = variant_color(point.variant)
            face = "white" if point.published else color
            ax.scatter(point.seconds, point.recall, s=46, zorder=3, color=face, edgecolors=color, lw=1.6)
            ax.annotate(point.label, (point.seconds, point.recall), xytext=(5, 4), textcoords="offset points",
                        fontsize=7, color="#555555" if point.published else "#222222")
        for variant in variant_order(p.variant for p in points):
            ax.scatter([], [], color=variant_color(variant), s=30, label=variant)
        ax.set_xlabel("seconds per image")
        ax.set_ylabel("R@50 (%)")
        ax.set_title("R@50 vs inference time (filled: this run, hollow: published row A–G)", loc="left",
                     fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        ax.margins(x=0.2, y=0.15)
        return fig

    ours = sum(not p.published for p in points)
    alt = (f"Scatter of R@50 (%) against seconds per image: {ours} point(s) from this run, "
           f"{len(points) - ours} published point(s)")
    return render(build, alt)
