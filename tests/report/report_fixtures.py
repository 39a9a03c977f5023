"""A small study on disk for the report tests: metrics files, params, prepare JSON, dvclive logs, benchmarks,
and a parser for the data attributes of the report's table cells."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from snakemake.benchmark import BenchmarkRecord

KS = (20, 50, 100)
PREDICATES = ["above", "on", "has", "wearing", "of", "in", "near", "behind", "with", "holding", "riding",
              "sitting on"]
# Training counts of the predicates above, deliberately not in name order.
FREQUENCIES = [500, 9000, 7000, 300, 6000, 5000, 200, 1500, 4000, 800, 100, 50]
VARIANTS = ["r101-detr", "vovnet39-detr", "vovnet57-detr", "vovnet99-detr", "vovnet39-centermask",
            "vovnet57-centermask", "vovnet99-centermask"]
ITERATIONS = [100000, 250000]
# Published T.P. column (etri-iterativeSG) for the variants evaluated below.
PUBLISHED_TOTAL = {"r101-detr": 93251470, "vovnet39-detr": 79102606, "vovnet39-centermask": 103168224}


def metrics_document(variant: str, iteration: int, seed: int, total: int, backbone: int) -> dict:
    """A metrics JSON in the contract's format with plausible, seed-dependent values."""
    rng = np.random.default_rng(seed)
    base, sgdet = float(rng.uniform(0.1, 0.3)), {}
    for i, k in enumerate(KS):
        recall = round(base + 0.02 * i, 6)
        mean_recall = round(base / 2 + 0.01 * i, 6)
        corrected = round(mean_recall - 0.004, 6)
        sgdet.update({
            f"R@{k}": recall, f"ngR@{k}": round(recall + 0.013, 6), f"zR@{k}": round(0.004 * (i + 1), 6),
            f"mR@{k}": mean_recall, f"mR_corrected@{k}": corrected,
            f"hR@{k}": 2 * recall * mean_recall / (recall + mean_recall),
            f"hR_corrected@{k}": 2 * recall * corrected / (recall + corrected),
            f"SGMeanRecall@{k}": mean_recall,
        })
    full = {name: float(rng.uniform(0, 1)) for name in PREDICATES}
    shares = dict(zip(KS, (0.6, 0.8, 1.0)))  # recall grows with K
    per_predicate = {str(k): {n: round(r * shares[k], 4) for n, r in full.items()} for k in KS}
    bbox = {name: round(float(rng.uniform(1, 30)), 4) for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    return {
        "variant": variant, "iteration": iteration, "split": "test", "num_images": 26446, "status": "ok",
        "sgdet": sgdet, "per_predicate_recall": per_predicate, "bbox": bbox,
        "timing": {"s_per_image": round(float(rng.uniform(0.05, 0.2)), 6), "batch_size": 8,
                   "device": "cuda:0", "warmup_batches": 2, "images_timed": 26446,
                   "gpu_model": "NVIDIA A100-SXM4-80GB", "gpu_count": 1},
        "params": {"backbone": backbone, "total": total, "trainable": total - 1000},
    }


@dataclass(frozen=True)
class Study:
    root: Path
    metrics: dict[tuple[str, int], Path]
    params: Path
    prepare: Path
    curves: list[str]
    benchmarks: Path

    def document(self, variant: str, iteration: int) -> dict:
        return json.loads(self.metrics[(variant, iteration)].read_text())


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def write_curves(directory: Path, steps: int, seed: int) -> None:
    """Real dvclive output: plots/metrics/<name>.tsv and metrics.json."""
    from dvclive import Live

    rng = np.random.default_rng(seed)
    with Live(str(directory), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        for step in range(steps):
            live.step = step * 100
            live.log_metric("train/loss", float(5.0 / (1 + step) + rng.uniform(0, 0.1)))
            live.log_metric("train/loss_bbox", float(1.0 / (1 + step)))
            live.log_metric("train/lr", 1e-4 if step < steps * 0.64 else 1e-5)
            if step % 5 == 4:
                live.log_metric("val/R@50", float(0.02 * step))
                live.log_metric("val/mR@50", float(0.01 * step))


def write_benchmark(path: Path, seconds: float) -> None:
    """A Snakemake benchmark TSV with Snakemake's own header."""
    header = BenchmarkRecord.get_header()
    row = [f"{seconds:.4f}", "0:00:00", "512.25", "900.5", "500.0", "505.1", "1.0", "2.0", "0.9", "3.5"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(header) + "\n" + "\t".join(row[: len(header)]) + "\n")


def write_study(root: Path) -> Study:
    """Seven-variant study at 100k/250k: 4 evaluated, 1 failed, the rest not run."""
    metrics = {}
    evaluated = [("r101-detr", 100000, 93251470, 42394816), ("r101-detr", 250000, 93251470, 42394816),
                 ("vovnet39-detr", 250000, 79102607, 28704704),  # one parameter too many: a mismatch
                 ("vovnet39-centermask", 250000, 103168224, 28704704)]
    for seed, (variant, iteration, total, backbone) in enumerate(evaluated):
        metrics[(variant, iteration)] = write_json(
            root / "eval" / variant / str(iteration) / "metrics.json",
            metrics_document(variant, iteration, seed, total, backbone))
    metrics[("vovnet57-centermask", 100000)] = write_json(
        root / "eval" / "vovnet57-centermask" / "100000" / "metrics.json",
        {"variant": "vovnet57-centermask", "iteration": 100000, "status": "failed",
         "error": "CUDA out of memory while loading checkpoint model_0100000.pth"})
    params = root / "params.yaml"
    params.write_text(f"mode: full\nstudy:\n  variants: {json.dumps(VARIANTS)}\n"
                      f"  eval_iterations: {ITERATIONS}\nmodel:\n  transformer_level: P7\n")
    prepare = write_json(root / "data" / "prepare.json", {
        "predicate_names": PREDICATES, "predicate_frequencies": FREQUENCIES,
        "sha256": {"VG-SGG-with-attri.h5": "ab" * 32, "image_data.json": "cd" * 32}})
    write_curves(root / "train" / "r101-detr" / "dvclive", 25, 0)
    write_curves(root / "train" / "other-name" / "dvclive", 20, 1)
    curves = [str(root / "train" / "r101-detr" / "dvclive"),
              f"vovnet39-detr={root / 'train' / 'other-name' / 'dvclive'}"]
    benchmarks = root / "benchmarks"
    write_benchmark(benchmarks / "prepare" / "all.tsv", 12.5)
    write_benchmark(benchmarks / "train" / "r101-detr.tsv", 3600.0)
    write_benchmark(benchmarks / "train" / "vovnet39-detr.tsv", 1800.0)
    write_benchmark(benchmarks / "evaluate" / "r101-detr_250000.tsv", 95.0)
    return Study(root, metrics, params, prepare, curves, benchmarks)


class ReportParser(HTMLParser):
    """Collects every element's attributes (with its text for <td>/<th>/<img>) from the report."""

    def __init__(self):
        super().__init__()
        self.elements: list[dict] = []
        self._open: list[dict] = []

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, **{k: (v if v is not None else "") for k, v in attrs}, "text": ""}
        self.elements.append(element)
        if tag in ("td", "th", "caption"):
            self._open.append(element)

    def handle_endtag(self, tag):
        if self._open and self._open[-1]["tag"] == tag:
            self._open.pop()

    def handle_data(self, data):
        for element in self._open:
            element["text"] += data

    def cells(self, **attributes) -> list[dict]:
        """<td> elements whose data attributes equal ``attributes`` (keys without the ``data-`` prefix)."""
        return [e for e in self.elements if e["tag"] == "td"
                and all(e.get(f"data-{k}") == str(v) for k, v in attributes.items())]


def parse_report(html: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(html)
    return parser
