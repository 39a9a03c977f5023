"""The variant catalogue: every model the study can train, one entry each, torch-free.

An entry says what a variant is (method, backbone, detector, the FPN level its transformer reads),
where its initial weights come from, its own training recipe where it is not the study's, the
protocols it is evaluated in, and the published row it is compared with. The model registry builds
from it, the params schema's variant names are tested against it, the workflow decides its initial
weights from it and the report finds each variant's published row and label in it. Adding a variant
is adding one entry here (docs/variants.md shows a worked example).

The published VoVNet rows (B-G of the ETRI table) were run with the transformer reading FPN level P7
(stride 128: the unmodified ETRI code hands it the last FPN output); those variants reproduce that.
The ``-p5`` variants are the same models reading P5 (stride 32, as R-101 feeds its transformer), the
comparison the study meant to make; the report shows them beside the rows they fix.

May import: itersg.errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from itersg.errors import UserError

METHODS = ("iterativesg", "speaq", "egtr")
PROTOCOLS = ("sgdet",)
TRANSFORMER_LEVELS = ("P3", "P4", "P5", "P6", "P7")
STUDY_LEVEL_AS_RUN = "P7"  # the FPN level the ETRI code handed its transformer (its last output)


@dataclass(frozen=True)
class Recipe:
    """A variant's own training recipe; None = the study's (``train.iterations``, ``train.batch_size``,
    ``study.eval_iterations``); ``train``: optimiser settings that replace the study's ``train.<key>``
    (``TRAIN_RECIPE_KEYS``). params.yaml's ``variants.<name>`` wins over both."""

    iterations: int | None = None
    batch_size: int | None = None
    eval_iterations: tuple[int, ...] | None = None
    train: tuple[tuple[str, float], ...] = ()


# The study's ``train.<key>`` settings a variant's recipe or ``variants.<name>`` may replace.
TRAIN_RECIPE_KEYS = ("lr", "lr_backbone", "lr_new", "weight_decay", "lr_drop_fraction", "clip_max_norm")


@dataclass(frozen=True)
class Variant:
    """One trainable model of the study.

    ``backbone``/``depth``: "resnet" 101 (detectron2 layout) or 50 (timm, EGTR), or "vovnet" 39/57/99;
    ``detector``: "detr" (no extra head), "centermask" (CenterMask's FCOS and mask heads beside DETR) or
    "deformable-detr" (EGTR's); ``transformer_level``: the FPN level the transformer reads (VoVNet; the
    ResNet variants read res5); ``init``: "vg-detr" = starts from the VG-pretrained DETR with its decoder
    replicated (``detr_weights.source``), "vg-deformable-detr" = from the VG-pretrained Deformable DETR
    (EGTR), None = from the backbone builder's own initialisation; ``published``: the ``ref`` of its rows
    in the report's reference_results.csv, None if none; ``label``: backbone and detector as that table spells them;
    ``released``: the download manifest's entry holding the authors' trained checkpoint of it, if any
    (``itersg fetch`` then says how to evaluate it); ``pretrain``: the optimiser settings of its own
    detector pretraining where they are not IterativeSG's DETR's (EGTR's Deformable DETR).
    """

    name: str
    method: str
    backbone: str
    depth: int
    detector: str
    label: tuple[str, str]
    transformer_level: str = "P5"
    init: str | None = None
    recipe: Recipe = field(default_factory=Recipe)
    protocols: tuple[str, ...] = PROTOCOLS
    published: str | None = None
    released: str | None = None
    pretrain: Recipe | None = None

    @property
    def aux_head(self) -> str | None:
        """The extra detection head beside DETR's, if any."""
        return "centermask" if self.detector == "centermask" else None


# SpeaQ's README recipe: batch 20, 150k iterations (the LR drop at 0.64 x 150k = 96k), evaluated at the end.
SPEAQ_RECIPE = Recipe(iterations=150_000, batch_size=20, eval_iterations=(150_000,))
# EGTR's train_egtr.py: batch 4 x 8 GPUs x 2 accumulated = 64, 50 epochs then 25 at 0.1 x lr, over RelTR's
# 57,723 training images: 902 iterations an epoch, 75 epochs (docs/egtr.md: the correspondence).
# Its learning rates: 2e-6 for what the pretrained detector holds, 2e-7 for the backbone, the reference points
# and the sampling offsets, 2e-4 for the new relation head; AdamW weight decay 1e-4, gradient clip 0.1; the
# fine-tuning's x0.1 after the 50th epoch is the step drop at 50 / 75 of the iterations.
EGTR_RECIPE = Recipe(iterations=67_650, batch_size=64, eval_iterations=(67_650,),
                     train=(("lr", 2e-6), ("lr_backbone", 2e-7), ("lr_new", 2e-4), ("weight_decay", 1e-4),
                            ("lr_drop_fraction", 50 / 75), ("clip_max_norm", 0.1)))
# EGTR's pretrain_detr.py: lr 1e-4 / backbone 1e-5, AdamW weight decay 1e-4, gradient clip 0.1, 150 epochs
# then 50 at 0.1 x lr (the drop at 150 / 200 of detr_weights.deformable_pretrain_iterations).
EGTR_DETR_PRETRAIN = Recipe(train=(("lr", 1e-4), ("lr_backbone", 1e-5), ("weight_decay", 1e-4),
                                   ("lr_drop_fraction", 150 / 200), ("clip_max_norm", 0.1)))
_VOVNET_REFS = {("detr", 39): "B", ("detr", 57): "C", ("detr", 99): "D",
                ("centermask", 39): "E", ("centermask", 57): "F", ("centermask", 99): "G"}


def _iterativesg_variants() -> list[Variant]:
    variants = [Variant("r101-detr", "iterativesg", "resnet", 101, "detr", ("ResNet-101", "DETR"),
                        init="vg-detr", published="A", released="iterativesg-final")]
    for detector in ("detr", "centermask"):
        for depth in (39, 57, 99):
            label = (f"VoVNetV2-{depth}-FPN", "DETR" if detector == "detr" else "CenterMask")
            ref = _VOVNET_REFS[detector, depth]
            variants.append(Variant(f"vovnet{depth}-{detector}", "iterativesg", "vovnet", depth, detector, label,
                                    transformer_level=STUDY_LEVEL_AS_RUN, published=ref))
    for detector in ("detr", "centermask"):
        for depth in (39, 57, 99):
            as_run = _named(variants, f"vovnet{depth}-{detector}")
            variants.append(replace(as_run, name=f"{as_run.name}-p5", transformer_level="P5"))
    return variants


def _named(variants: list[Variant], name: str) -> Variant:
    return next(v for v in variants if v.name == name)


def _catalogue() -> dict[str, Variant]:
    iterativesg = _iterativesg_variants()
    speaq = [replace(v, name=f"{v.name}-speaq", method="speaq", published=None, released=None) for v in iterativesg]
    speaq[0] = replace(speaq[0], recipe=SPEAQ_RECIPE, published="SpeaQ", released="speaq-final")
    # IterativeSG's r101-detr under another name, trained with SpeaQ's recipe (SpeaQ's baseline)
    baseline = replace(iterativesg[0], name="r101-detr-speaq-baseline", recipe=SPEAQ_RECIPE, published=None,
                       released=None)
    egtr = Variant("egtr-r50", "egtr", "resnet", 50, "deformable-detr", ("ResNet-50", "Deformable DETR"),
                   init="vg-deformable-detr", recipe=EGTR_RECIPE, published="EGTR", released="egtr-final",
                   pretrain=EGTR_DETR_PRETRAIN)
    return {v.name: v for v in (*iterativesg, *speaq, baseline, egtr)}


VARIANTS: dict[str, Variant] = _catalogue()


def get_variant(name: str) -> Variant:
    """The catalogue entry ``name``; a UserError listing the names for an unknown one."""
    if name not in VARIANTS:
        raise UserError(f"unknown variant {name!r}; choose one of {list(VARIANTS)}")
    return VARIANTS[name]


def variant_order(variants: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """Distinct ``variants`` in the catalogue's order (the published table's rows first), unknown ones last."""
    known = list(VARIANTS)
    return sorted(set(variants), key=lambda v: (known.index(v) if v in known else len(known), v))
