"""Neural Motifs' relation predictor as Scene-Graph-Benchmark builds it (``MotifPredictor``).

Zellers et al., "Neural Motifs: Scene Graph Parsing with Global Context", CVPR 2018, in the version of
KaihuaTang/Scene-Graph-Benchmark.pytorch ("SGB", ``maskrcnn_benchmark/modeling/roi_heads/relation_head/``:
``roi_relation_predictors.py`` ``MotifPredictor``, ``model_motifs.py`` ``LSTMContext`` / ``DecoderRNN`` /
``FrequencyBias``, ``utils_motifs.py``, ``utils_relation.py``), configured as
``configs/e2e_relation_X_101_32_8_FPN_1x.yaml`` with ``MODEL.ROI_RELATION_HEAD.PREDICTOR MotifPredictor``
(``MotifsConfig``). Per image, with K objects and R candidate pairs:

* object input: ROI feature [K, 4096] | class embedding [K, 200] (``obj_embed1``: of the ground-truth label
  in PredCls, softmax(detached detector logits) @ ``obj_embed1.weight`` otherwise) | box embedding [K, 128]
  (``pos_embed`` of the 9 box features of ``encode_box_info``);
* the objects are ordered by box centre x, right to left (``leftright_order``), and ``obj_ctx_rnn`` (a
  bidirectional ``nn.LSTM``; SGB replaced Motifs' AlternatingHighwayLSTM) + ``lin_obj_h`` give the object
  context [K, 512];
* object classes: PredCls takes the ground truth (logits ``to_onehot``, +-1000); SGCls / SGDet decode them
  in that order with ``DecoderRNN`` (a highway LSTM cell fed the previous class's embedding; teacher
  forcing in training; in SGDet evaluation ``later_nms`` over the per-class boxes);
* edge context [K, 512]: ``edge_ctx_rnn`` (bidirectional LSTM, same order) + ``lin_edge_h`` over
  [``obj_embed2`` of the object class, ROI feature, object context];
* ``post_emb`` (512 -> 1024) splits it into a subject and an object half; pair (s, o) concatenates the
  subject half of s and the object half of o, ``post_cat`` (1024 -> 4096, no activation) maps it, it is
  multiplied by the union feature [R, 4096] (``up_dim`` first if the widths differ), ``rel_compress``
  (4096 -> 51) gives the logits, and ``freq_bias`` (a trainable embedding of the 151 x 151 class pairs,
  initialised with ``frequency_log_dist`` of the training statistics) of the predicted classes is added.

Labels are SGB's: objects 0..150 (0 background), predicates 0..50 (0 background). Parameter and buffer names
are SGB's: an SGB checkpoint's ``roi_heads.relation.predictor.*`` keys load after dropping that prefix.

Deviations (outputs are SGB's otherwise): the object order sorts the exact centre x (SGB sorts float32 keys
with an offset of 2 * (2 * K * B + image index) added, which rounds near-equal centres, and breaks ties in
torch.sort's unstable order); images are batched with ``pack_sequence`` instead of SGB's hand-made
PackedSequence (the same per-image sequences; only which image gets which row of the decoder's dropout mask
differs); the decoder accepts several images in evaluation (SGB asserts one image per GPU there); GloVe
vectors are an argument (``class_word_vectors`` builds them as SGB's ``obj_edge_vectors``): without them
the embeddings keep nn.Embedding's N(0, 1) initialisation, SGB's own fallback for a word GloVe lacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence, pad_sequence

MODES = ("predcls", "sgcls", "sgdet")
ONEHOT_FILL = 1000.0  # to_onehot's fill: PredCls object logits are +-1000
FREQ_EPS = 1e-3  # VGDataset.get_statistics: log(fg / sum + eps)
AVERAGE_RATIO = 0.0005  # LSTMContext.average_ratio (moving averages of the effect-analysis buffers)


@dataclass(frozen=True)
class MotifsConfig:
    """SGB's settings for MotifPredictor; config keys in brackets (MODEL.ROI_RELATION_HEAD. left out).

    ``mode``: "predcls" [USE_GT_BOX True, USE_GT_OBJECT_LABEL True], "sgcls" [True, False] or "sgdet"
    [USE_GT_BOX False]. Widths: ``in_channels`` (ROI feature, the box head's MLP_HEAD_DIM 4096),
    ``union_dim`` (union feature, ROI_BOX_HEAD.MLP_HEAD_DIM), ``embed_dim`` [EMBED_DIM], ``hidden_dim``
    [CONTEXT_HIDDEN_DIM], ``pooling_dim`` [CONTEXT_POOLING_DIM]; LSTM layers [CONTEXT_OBJ_LAYER,
    CONTEXT_REL_LAYER]; ``dropout_rate`` [CONTEXT_DROPOUT_RATE] (the decoder's recurrent dropout, and
    between LSTM layers when there are several); ``use_vision`` [PREDICT_USE_VISION], ``use_bias``
    [PREDICT_USE_BIAS]; ``later_nms_thresh`` [TEST.RELATION.LATER_NMS_PREDICTION_THRES: 0.5 in the yaml,
    0.3 in defaults.py]; ``effect_analysis`` [CAUSAL.EFFECT_ANALYSIS: True in the yaml]: the
    ``untreated_*`` moving-average buffers exist (they never change MotifPredictor's outputs).
    """

    mode: str = "predcls"
    num_obj_classes: int = 151
    num_rel_classes: int = 51
    in_channels: int = 4096
    union_dim: int = 4096
    embed_dim: int = 200
    hidden_dim: int = 512
    pooling_dim: int = 4096
    obj_layers: int = 1
    rel_layers: int = 1
    dropout_rate: float = 0.2
    use_vision: bool = True
    use_bias: bool = True
    later_nms_thresh: float = 0.5
    effect_analysis: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.obj_layers < 1 or self.rel_layers < 1:
            raise ValueError("the object and edge LSTMs need at least one layer")


# ---------------------------------------------------------------- boxes, labels, statistics


def encode_box_info(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """SGB's 9 box features [K, 9] of x1y1x2y2 boxes [K, 4] in an image of (height, width) pixels.

    (w/W, h/H, cx/W, cy/H, x1/W, y1/H, x2/W, y2/H, wh/WH) with w = x2 - x1 + 1 (maskrcnn-benchmark's
    inclusive boxes) and cx = x1 + w/2. SGB passes boxes in the resized network-input frame with that size.
    """
    height, width = image_size
    wh = boxes[:, 2:] - boxes[:, :2] + 1.0
    centre = boxes[:, :2] + 0.5 * wh
    w, h = wh.unbind(1)
    size = boxes.new_tensor([width, height])
    return torch.cat([wh / size, centre / size, boxes[:, :2] / size, boxes[:, 2:] / size,
                      (w * h / (width * height))[:, None]], dim=1)


def leftright_order(boxes: Tensor) -> Tensor:
    """The LSTM order [K] of boxes [K, 4]: centre x = (x1 + x2) / 2 descending (SGB's "leftright" sort
    scores c_x / (max c_x + 1) and sorts them high to low, so the sequence runs right to left)."""
    centre_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
    return torch.sort(centre_x, descending=True, stable=True).indices


def to_onehot(labels: Tensor, num_classes: int, fill: float = ONEHOT_FILL) -> Tensor:
    """[K, C] float: ``fill`` at each label, ``-fill`` elsewhere (SGB's PredCls object logits)."""
    onehot = torch.full((len(labels), num_classes), -fill, device=labels.device)
    return onehot.scatter_(1, labels.long()[:, None], fill)


def frequency_log_dist(fg_matrix: np.ndarray | Tensor, bg_matrix: np.ndarray | Tensor,
                       eps: float = FREQ_EPS) -> Tensor:
    """SGB's ``pred_dist`` [C, C, P] float32 from counts fg [C, C, P] and bg [C, C] (``sgb_statistics``).

    As ``VGDataset.get_statistics``: predicate 0 ("background") counts bg + 1, then
    ``log(fg / fg.sum(-1) + eps)``, so an unseen class pair gets (log(1 + eps), log(eps), ...).
    """
    fg = np.array(fg_matrix.cpu() if isinstance(fg_matrix, Tensor) else fg_matrix, dtype=np.float64)
    bg = np.asarray(bg_matrix.cpu() if isinstance(bg_matrix, Tensor) else bg_matrix, dtype=np.float64)
    fg[:, :, 0] = bg + 1
    return torch.as_tensor(np.log(fg / fg.sum(2, keepdims=True) + eps), dtype=torch.float32)


def _overlapping_pairs(boxes: np.ndarray, must_overlap: bool) -> np.ndarray:
    """SGB's ``box_filter``: ordered pairs (i != j) [M, 2] whose boxes intersect with positive area
    (``bbox_overlaps(..., to_move=0) > 0``); all ordered pairs if ``must_overlap`` is off or none does."""
    top_left = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (bottom_right - top_left).clip(min=0)
    overlaps = wh[..., 0] * wh[..., 1] > 0
    np.fill_diagonal(overlaps, False)
    if not must_overlap or not overlaps.any():
        overlaps = ~np.eye(len(boxes), dtype=bool)
    return np.column_stack(np.where(overlaps))


def sgb_statistics(images: Iterable[tuple[np.ndarray | Tensor, np.ndarray | Tensor, np.ndarray | Tensor]],
                   num_classes: int = 151, num_predicates: int = 51, must_overlap: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Training counts (fg [C, C, P], bg [C, C]) int64 as SGB's ``get_VG_statistics``.

    Args:
        images: per training image (labels [M] 1..150, boxes [M, 4] x1y1x2y2, relations [R, 3] (subject,
            object, predicate 1..50)), as SGB's train split holds them: the first 5000 images removed
            (validation), relations whose boxes do not overlap dropped and then images without relations
            (``filter_non_overlap``), duplicates kept (``filter_duplicate_rels=False``).
        must_overlap: bg counts the class pairs of the overlapping ordered box pairs (``_overlapping_pairs``).

    Returns:
        fg: every relation counted at (subject class, object class, predicate); bg: ordered box pairs.
    """
    fg = np.zeros((num_classes, num_classes, num_predicates), dtype=np.int64)
    bg = np.zeros((num_classes, num_classes), dtype=np.int64)
    for labels, boxes, relations in images:
        labels = np.asarray(labels, dtype=np.int64)
        relations = np.asarray(relations, dtype=np.int64).reshape(-1, 3)
        np.add.at(fg, (labels[relations[:, 0]], labels[relations[:, 1]], relations[:, 2]), 1)
        pairs = _overlapping_pairs(np.asarray(boxes, dtype=np.float64), must_overlap)
        np.add.at(bg, (labels[pairs[:, 0]], labels[pairs[:, 1]]), 1)
    return fg, bg


def class_word_vectors(names: Sequence[str], lookup: Mapping[str, Tensor], dim: int = 200,
                       generator: torch.Generator | None = None) -> Tensor:
    """Embedding rows [len(names), dim] as SGB's ``obj_edge_vectors``: a name's GloVe vector, else that of
    its longest word (the first of equally long ones), else N(0, 1) (so "__background__" is random).

    ``lookup`` maps words to [dim] vectors (glove.6B.200d). The decoder's table is ``["start", *classes]``.
    """
    vectors = torch.randn(len(names), dim, generator=generator)
    for row, name in enumerate(names):
        longest = sorted(name.split(" "), key=len, reverse=True)[0]
        vector = lookup.get(name, lookup.get(longest))
        if vector is not None:
            vectors[row] = torch.as_tensor(vector, dtype=torch.float32)
    return vectors


def pairwise_class_iou(boxes_per_class: Tensor) -> Tensor:
    """IoU [N, N, C] between the class-c boxes of every two objects, boxes [N, C, 4] (+1 pixel areas,
    SGB's ``nms_overlaps``)."""
    lower = torch.maximum(boxes_per_class[:, None, :, :2], boxes_per_class[None, :, :, :2])
    upper = torch.minimum(boxes_per_class[:, None, :, 2:], boxes_per_class[None, :, :, 2:])
    inter = (upper - lower + 1.0).clamp(min=0).prod(-1)
    areas = (boxes_per_class[..., 2:] - boxes_per_class[..., :2] + 1.0).prod(-1)  # [N, C]
    return inter / (areas[None] + areas[:, None] - inter)


def later_nms(boxes_per_class: Tensor, logits: Tensor, threshold: float) -> Tensor:
    """Labels [N] 0..C-1 by SGB's greedy per-class NMS over objects (``DecoderRNN`` / ``obj_prediction_nms``).

    Repeatedly take the highest remaining non-background probability (object b, class c), label b with c,
    zero class c of every object whose class-c box has IoU >= ``threshold`` with b's, and retire b. An
    object whose classes were all zeroed is labelled 0 (background), as in SGB.

    Args:
        boxes_per_class: [N, C, 4] the detector's box of each object for each class.
        logits: [N, C] object class logits.
    """
    num_objects, num_classes = logits.shape
    overlap = (pairwise_class_iou(boxes_per_class.detach()) >= threshold).cpu()
    probs = F.softmax(logits.detach().float(), 1).cpu()
    probs[:, 0] = 0.0
    labels = torch.zeros(num_objects, dtype=torch.int64)
    for _ in range(num_objects):
        box, cls = divmod(int(probs.argmax()), num_classes)
        labels[box] = cls
        probs[overlap[box, :, cls], cls] = 0.0
        probs[box] = -1.0
    return labels.to(logits.device)


# ---------------------------------------------------------------- modules


class FrequencyBias(nn.Module):
    """log p(predicate | subject class, object class): a trainable ``obj_baseline`` Embedding [C * C, P].

    Args:
        pred_dist: [C, C, P] initial values (``frequency_log_dist``); without it zeros until
            ``load_statistics`` or a checkpoint fills them.
    """

    def __init__(self, num_obj_classes: int = 151, num_rel_classes: int = 51, pred_dist: Tensor | None = None):
        super().__init__()
        self.num_objs = num_obj_classes
        self.obj_baseline = nn.Embedding(num_obj_classes * num_obj_classes, num_rel_classes)
        nn.init.zeros_(self.obj_baseline.weight)
        if pred_dist is not None:
            self.load_statistics(pred_dist)

    @torch.no_grad()
    def load_statistics(self, pred_dist: Tensor) -> None:
        """Copy [C, C, P] values into the embedding (row subject * C + object)."""
        self.obj_baseline.weight.copy_(torch.as_tensor(pred_dist).reshape(self.obj_baseline.weight.shape))

    def index_with_labels(self, pair_labels: Tensor) -> Tensor:
        """[R, P] rows of class pairs [R, 2] (subject, object)."""
        return self.obj_baseline(pair_labels[:, 0] * self.num_objs + pair_labels[:, 1])

    def forward(self, pair_labels: Tensor) -> Tensor:
        """Same as ``index_with_labels``."""
        return self.index_with_labels(pair_labels)


class DecoderRNN(nn.Module):
    """SGB's object-class decoder: a highway LSTM cell over the sorted objects of each image.

    Step input: [decoder input, embedding of the previous class] (``obj_embed`` row 0 is "start", class c
    is row c + 1). Gates from ``input_linearity`` (6 chunks) + ``state_linearity`` (5 chunks): input,
    forget, memory, output, highway; the highway mixes the LSTM output with the 6th input chunk.

    Args:
        num_classes: C (with background); the embedding has C + 1 rows.
        inputs_dim: the per-object decoder input (object input + object context); ``embed_dim`` is added.
        rnn_drop: recurrent dropout of the output (one mask per forward, training only).
        nms_thresh: IoU of ``later_nms`` in SGDet evaluation.
        word_vectors, start_vector: initial class rows [C, E] and "start" row [E]; N(0, 1) without.
    """

    def __init__(self, num_classes: int, embed_dim: int, inputs_dim: int, hidden_dim: int, rnn_drop: float,
                 nms_thresh: float, word_vectors: Tensor | None = None, start_vector: Tensor | None = None):
        super().__init__()
        self.hidden_size, self.rnn_drop, self.nms_thresh = hidden_dim, rnn_drop, nms_thresh
        self.obj_embed = nn.Embedding(num_classes + 1, embed_dim)
        self.input_linearity = nn.Linear(inputs_dim + embed_dim, 6 * hidden_dim)
        self.state_linearity = nn.Linear(hidden_dim, 5 * hidden_dim)
        self.out_obj = nn.Linear(hidden_dim, num_classes)
        nn.init.zeros_(self.input_linearity.bias)
        nn.init.zeros_(self.state_linearity.bias)
        with torch.no_grad():  # initial rows: GloVe "start" and the classes' vectors, where given
            if start_vector is not None:
                self.obj_embed.weight[0].copy_(start_vector)
            if word_vectors is not None:
                self.obj_embed.weight[1:].copy_(word_vectors)

    def lstm_equations(self, step_input: Tensor, state: Tensor, memory: Tensor,
                       dropout_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """One step for [n, in] inputs and [n, h] state / memory -> (new state, new memory)."""
        projected_input = self.input_linearity(step_input).chunk(6, dim=1)
        projected_state = self.state_linearity(state).chunk(5, dim=1)
        gate = [a + b for a, b in zip(projected_input[:5], projected_state, strict=True)]
        memory = torch.sigmoid(gate[0]) * torch.tanh(gate[2]) + torch.sigmoid(gate[1]) * memory
        output = torch.sigmoid(gate[3]) * torch.tanh(memory)
        highway = torch.sigmoid(gate[4])
        output = highway * output + (1 - highway) * projected_input[5]
        if dropout_mask is not None and self.training:
            output = output * dropout_mask
        return output, memory

    def forward(self, sequences: Sequence[Tensor], labels: Sequence[Tensor] | None = None,
                boxes_per_class: Sequence[Tensor] | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """Decode each image's sorted objects.

        Args:
            sequences: per image [K_i, inputs_dim], in LSTM order.
            labels: per image [K_i] (same order) for teacher forcing, needed in training; a 0 (background
                proposal) is replaced by the predicted foreground class.
            boxes_per_class: per image [K_i, C, 4] (same order); in evaluation the classes are then
                re-chosen by ``later_nms``.

        Returns:
            per image the class logits [K_i, C] and classes [K_i]: in training the (filled) labels, in
            evaluation the greedy foreground argmax or the NMS labels.
        """
        if self.training and labels is None:
            raise ValueError("DecoderRNN needs the object labels in training")
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
        lengths = [len(sequences[i]) for i in order]
        inputs = pad_sequence([sequences[i] for i in order])  # [T, B, D]
        targets = pad_sequence([labels[i] for i in order]) if self.training else None
        dists, commitments = self._decode(inputs, lengths, targets)
        out_dists, out_preds = [dists[0]] * len(order), [commitments[0]] * len(order)
        for column, index in enumerate(order):
            out_dists[index] = dists[: lengths[column], column]
            out_preds[index] = commitments[: lengths[column], column]
        if boxes_per_class is not None and not self.training:
            out_preds = [later_nms(b, d, self.nms_thresh) for b, d in zip(boxes_per_class, out_dists, strict=True)]
        return out_dists, out_preds

    def _decode(self, inputs: Tensor, lengths: list[int], targets: Tensor | None) -> tuple[Tensor, Tensor]:
        """Padded inputs [T, B, D] (B sorted by length, descending) -> logits [T, B, C], classes [T, B]."""
        batch = inputs.shape[1]
        state = memory = inputs.new_zeros(batch, self.hidden_size)
        previous = self.obj_embed.weight[0].expand(batch, -1)
        mask = self._dropout_mask(batch, inputs)
        dists, commitments = [], []
        for step in range(inputs.shape[0]):
            n = sum(length > step for length in lengths)
            state, memory, previous = state[:n], memory[:n], previous[:n]
            mask = None if mask is None else mask[:n]
            state, memory = self.lstm_equations(torch.cat((inputs[step, :n], previous), 1), state, memory, mask)
            dist = self.out_obj(state)
            commitment = self._commit(dist, None if targets is None else targets[step, :n])
            previous = self.obj_embed(commitment + 1)
            dists.append(F.pad(dist, (0, 0, 0, batch - n)))
            commitments.append(F.pad(commitment, (0, batch - n)))
        return torch.stack(dists), torch.stack(commitments)

    def _dropout_mask(self, batch: int, like: Tensor) -> Tensor | None:
        """One [B, h] mask for all steps (variational dropout), scaled by 1 / keep; None in evaluation."""
        if not self.training or self.rnn_drop <= 0:
            return None
        keep = torch.rand(batch, self.hidden_size, device=like.device) > self.rnn_drop
        return keep.to(like.dtype) / (1.0 - self.rnn_drop)

    def _commit(self, dist: Tensor, target: Tensor | None) -> Tensor:
        """The class fed to the next step: the target (training; background -> best foreground class) or
        the best foreground class of softmax(dist)."""
        if target is None:
            return F.softmax(dist.detach(), 1)[:, 1:].argmax(1) + 1
        best = dist.detach()[:, 1:].argmax(1) + 1
        return torch.where(target == 0, best, target.long())


def _bilstm(rnn: nn.LSTM, sequences: Sequence[Tensor]) -> Tensor:
    """The LSTM over each [K_i, D] sequence -> outputs of all images concatenated [sum K_i, 2h]."""
    output, _ = pad_packed_sequence(rnn(pack_sequence(list(sequences), enforce_sorted=False))[0])
    return torch.cat([output[: len(s), i] for i, s in enumerate(sequences)])


def _inverse(permutations: Sequence[Tensor]) -> Tensor:
    """The inverse of the per-image permutations, as one index over the concatenation."""
    inverse, offset = [], 0
    for perm in permutations:
        inverse.append(torch.argsort(perm) + offset)
        offset += len(perm)
    return torch.cat(inverse)


def _split_sorted(features: Tensor, counts: list[int], permutations: Sequence[Tensor]) -> list[Tensor]:
    """Concatenated [sum K_i, D] rows -> per image [K_i, D] in LSTM order."""
    return [f[p] for f, p in zip(features.split(counts), permutations, strict=True)]


class LSTMContext(nn.Module):
    """SGB's object and edge context of Neural Motifs (``context_layer`` of ``MotifPredictor``).

    Args:
        config: the predictor's settings.
        word_vectors: [C, embed_dim] initial ``obj_embed1`` / ``obj_embed2`` rows (GloVe); N(0, 1) without.
        start_vector: [embed_dim] initial "start" row of the decoder's embedding (GloVe "start").
    """

    def __init__(self, config: MotifsConfig, word_vectors: Tensor | None = None,
                 start_vector: Tensor | None = None):
        super().__init__()
        self.config = c = config
        feature_dim = c.in_channels + c.embed_dim + 128
        self.obj_embed1 = nn.Embedding(c.num_obj_classes, c.embed_dim)
        self.obj_embed2 = nn.Embedding(c.num_obj_classes, c.embed_dim)
        self.pos_embed = nn.Sequential(nn.Linear(9, 32), nn.BatchNorm1d(32, momentum=0.001),
                                       nn.Linear(32, 128), nn.ReLU(inplace=True))
        self.obj_ctx_rnn = nn.LSTM(feature_dim, c.hidden_dim, c.obj_layers, bidirectional=True,
                                   dropout=c.dropout_rate if c.obj_layers > 1 else 0.0)
        self.decoder_rnn = DecoderRNN(c.num_obj_classes, c.embed_dim, c.hidden_dim + feature_dim, c.hidden_dim,
                                      c.dropout_rate, c.later_nms_thresh, word_vectors, start_vector)
        self.edge_ctx_rnn = nn.LSTM(c.embed_dim + c.hidden_dim + c.in_channels, c.hidden_dim, c.rel_layers,
                                    bidirectional=True, dropout=c.dropout_rate if c.rel_layers > 1 else 0.0)
        self.lin_obj_h = nn.Linear(2 * c.hidden_dim, c.hidden_dim)
        self.lin_edge_h = nn.Linear(2 * c.hidden_dim, c.hidden_dim)
        if word_vectors is not None:
            with torch.no_grad():
                self.obj_embed1.weight.copy_(word_vectors)
                self.obj_embed2.weight.copy_(word_vectors)
        if c.effect_analysis:
            self.register_buffer("untreated_dcd_feat", torch.zeros(c.hidden_dim + feature_dim))
            self.register_buffer("untreated_obj_feat", torch.zeros(feature_dim))
            self.register_buffer("untreated_edg_feat", torch.zeros(c.embed_dim + c.in_channels))

    def forward(self, roi_features: Sequence[Tensor], boxes: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]],
                labels: Sequence[Tensor] | None = None, class_logits: Sequence[Tensor] | None = None,
                boxes_per_class: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Object logits [N, C], object classes [N] and edge context [N, hidden] over all N = sum K_i objects
        (arguments as ``MotifPredictor.forward``)."""
        counts = [len(b) for b in boxes]
        x = torch.cat(list(roi_features))
        obj_labels = None if labels is None else torch.cat(list(labels)).long()
        boxes_info = torch.cat([encode_box_info(b, s) for b, s in zip(boxes, image_sizes, strict=True)])
        obj_pre_rep = torch.cat((x, self._class_embedding(obj_labels, class_logits), self.pos_embed(boxes_info)), -1)
        perms = [leftright_order(b) for b in boxes]
        obj_dists, obj_preds, obj_ctx = self.obj_ctx(obj_pre_rep, counts, perms, labels, boxes_per_class)
        obj_embed2 = self.obj_embed2(obj_preds)
        edge_ctx = self.edge_ctx(torch.cat((obj_embed2, x, obj_ctx), -1), counts, perms)
        if self.training and self.config.effect_analysis:
            self._moving_average("untreated_obj_feat", obj_pre_rep)
            self._moving_average("untreated_edg_feat", torch.cat((obj_embed2, x), -1))
        return obj_dists, obj_preds, edge_ctx

    def _class_embedding(self, labels: Tensor | None, class_logits: Sequence[Tensor] | None) -> Tensor:
        """[N, embed]: ``obj_embed1`` of the labels (PredCls) or of softmax(detached detector logits)."""
        if self.config.mode == "predcls":
            if labels is None:
                raise ValueError("PredCls needs the ground-truth labels")
            return self.obj_embed1(labels)
        if class_logits is None:
            raise ValueError("SGCls / SGDet need the detector's class logits")
        return F.softmax(torch.cat(list(class_logits)).detach(), dim=1) @ self.obj_embed1.weight

    def obj_ctx(self, obj_feats: Tensor, counts: list[int], perms: Sequence[Tensor],
                labels: Sequence[Tensor] | None, boxes_per_class: Sequence[Tensor] | None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Object context: [N, D] object inputs -> logits [N, C], classes [N], context [N, hidden]."""
        sorted_feats = _split_sorted(obj_feats, counts, perms)
        encoder = self.lin_obj_h(_bilstm(self.obj_ctx_rnn, sorted_feats))  # LSTM order
        decoder_inp = torch.cat((torch.cat(sorted_feats), encoder), 1)
        if self.training and self.config.effect_analysis:
            self._moving_average("untreated_dcd_feat", decoder_inp)
        inverse = _inverse(perms)
        if self.config.mode == "predcls":
            if labels is None:
                raise ValueError("PredCls needs the ground-truth labels")
            obj_preds = torch.cat(list(labels)).long()
            return to_onehot(obj_preds, self.config.num_obj_classes), obj_preds, encoder[inverse]
        sorted_labels = None if labels is None else [lab[p] for lab, p in zip(labels, perms, strict=True)]
        sorted_boxes = None if boxes_per_class is None or self.config.mode != "sgdet" else [
            b[p] for b, p in zip(boxes_per_class, perms, strict=True)]
        dists, preds = self.decoder_rnn(decoder_inp.split(counts), sorted_labels, sorted_boxes)
        return torch.cat(dists)[inverse], torch.cat(preds)[inverse], encoder[inverse]

    def edge_ctx(self, inp_feats: Tensor, counts: list[int], perms: Sequence[Tensor]) -> Tensor:
        """Edge context [N, hidden] of the [N, D] edge inputs (same order as the object context)."""
        edge_reps = self.lin_edge_h(_bilstm(self.edge_ctx_rnn, _split_sorted(inp_feats, counts, perms)))
        return edge_reps[_inverse(perms)]

    @torch.no_grad()
    def _moving_average(self, name: str, values: Tensor) -> None:
        holder = getattr(self, name)
        holder.mul_(1 - AVERAGE_RATIO).add_(AVERAGE_RATIO * values.mean(0))


class MotifPredictor(nn.Module):
    """SGB's ``MotifPredictor`` (no attributes): object logits and relation logits of Neural Motifs.

    Args:
        config: ``MotifsConfig()`` is the VG PredCls predictor of e2e_relation_X_101_32_8_FPN_1x.yaml.
        pred_dist: [C, C, P] initial frequency bias (``frequency_log_dist``); zeros without.
        word_vectors: [C, embed_dim] GloVe vectors of the classes (``class_word_vectors``), for
            ``obj_embed1``, ``obj_embed2`` and the decoder's class rows; random N(0, 1) without.
        start_vector: [embed_dim] GloVe "start" for the decoder's first input; random N(0, 1) without.
    """

    def __init__(self, config: MotifsConfig | None = None, pred_dist: Tensor | None = None,
                 word_vectors: Tensor | None = None, start_vector: Tensor | None = None):
        super().__init__()
        self.config = c = config or MotifsConfig()
        self.context_layer = LSTMContext(c, word_vectors, start_vector)
        self.post_emb = nn.Linear(c.hidden_dim, 2 * c.hidden_dim)
        self.post_cat = nn.Linear(2 * c.hidden_dim, c.pooling_dim)
        self.rel_compress = nn.Linear(c.pooling_dim, c.num_rel_classes)
        _normal_init(self.post_emb, 10.0 * (1.0 / c.hidden_dim) ** 0.5)
        _xavier_init(self.post_cat)
        _xavier_init(self.rel_compress)
        self.union_single_not_match = c.pooling_dim != c.union_dim
        if self.union_single_not_match:
            self.up_dim = nn.Linear(c.union_dim, c.pooling_dim)
            _xavier_init(self.up_dim)
        if c.use_bias:
            self.freq_bias = FrequencyBias(c.num_obj_classes, c.num_rel_classes, pred_dist)

    def forward(self, boxes: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]],
                roi_features: Sequence[Tensor], rel_pair_idxs: Sequence[Tensor],
                union_features: Sequence[Tensor] | None = None, labels: Sequence[Tensor] | None = None,
                class_logits: Sequence[Tensor] | None = None, boxes_per_class: Sequence[Tensor] | None = None
                ) -> list[dict[str, Tensor]]:
        """Object and relation logits per image.

        Args:
            boxes: per image [K, 4] x1y1x2y2 (inclusive) pixels of the objects.
            image_sizes: per image (height, width) of the frame of ``boxes`` (SGB: the resized input).
            roi_features: per image [K, in_channels] box-head features (fc7).
            rel_pair_idxs: per image [R, 2] (subject, object) indices into the K objects.
            union_features: per image [R, union_dim] (needed with ``use_vision``).
            labels: per image [K] classes 0..150: ground truth in PredCls; in training the assigned labels
                (0 = background proposal) for the decoder's teacher forcing.
            class_logits: per image [K, 151] detector logits (SGCls / SGDet).
            boxes_per_class: per image [K, 151, 4] detector boxes per class (SGDet evaluation: later NMS).

        Returns:
            per image ``obj_logits`` [K, 151] (PredCls: +-1000 one-hot of the labels), ``obj_preds`` [K]
            (the classes the frequency bias used: labels in PredCls and in training, the decoder's (NMS)
            classes in evaluation) and ``rel_logits`` [R, 51] (frequency bias included).
        """
        obj_dists, obj_preds, edge_ctx = self.context_layer(roi_features, boxes, image_sizes, labels,
                                                            class_logits, boxes_per_class)
        head_rep, tail_rep = self.post_emb(edge_ctx).view(-1, 2, self.config.hidden_dim).unbind(1)
        pairs = _global_pairs(rel_pair_idxs, [len(b) for b in boxes])
        prod_rep = self.post_cat(torch.cat((head_rep[pairs[:, 0]], tail_rep[pairs[:, 1]]), -1))
        if self.config.use_vision:
            if union_features is None:
                raise ValueError("use_vision needs the union features")
            union = torch.cat(list(union_features))
            prod_rep = prod_rep * (self.up_dim(union) if self.union_single_not_match else union)
        rel_dists = self.rel_compress(prod_rep)
        if self.config.use_bias:
            rel_dists = rel_dists + self.freq_bias.index_with_labels(obj_preds[pairs])
        counts, rel_counts = [len(b) for b in boxes], [len(p) for p in rel_pair_idxs]
        return [{"obj_logits": d, "obj_preds": p, "rel_logits": r} for d, p, r in zip(
            obj_dists.split(counts), obj_preds.split(counts), rel_dists.split(rel_counts), strict=True)]


def _global_pairs(rel_pair_idxs: Sequence[Tensor], counts: list[int]) -> Tensor:
    """Per-image [R_i, 2] pair indices -> [sum R_i, 2] indices into the concatenated objects."""
    offsets = np.cumsum([0, *counts[:-1]]).tolist()
    return torch.cat([p.long() + o for p, o in zip(rel_pair_idxs, offsets, strict=True)])


def _normal_init(layer: nn.Linear, std: float) -> None:
    """SGB's ``layer_init(..., normal=True)``: weight N(0, std), bias 0."""
    nn.init.normal_(layer.weight, mean=0.0, std=std)
    nn.init.zeros_(layer.bias)


def _xavier_init(layer: nn.Linear) -> None:
    """SGB's ``layer_init(..., xavier=True)``: Xavier-normal weight (gain 1), bias 0."""
    nn.init.xavier_normal_(layer.weight, gain=1.0)
    nn.init.zeros_(layer.bias)
