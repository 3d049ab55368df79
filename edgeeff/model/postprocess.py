"""Detection post-processing in numpy: anchors, box decoding, NMS. The reference every runtime form
(Keras, TFLite's TFLite_Detection_PostProcess, ONNX, OpenVINO) is tested against.

It follows google/automl ``efficientdet/tf2/anchors.py`` and ``postprocess.py``:

* anchors: per level (P3..P7), ``num_scales`` octave scales (2^(i/num_scales)) times each aspect
  ratio, centred on each cell of the level's feature map; the base size is ``anchor_scale`` times
  the level's stride. Order: level, row, column, scale, aspect ratio: the order of the network's
  flattened outputs (:mod:`edgeeff.model.efficientdet`);
* decoding: (ty, tx, th, tw) relative to the anchor's centre and size, no variance scaling;
* selection: each anchor keeps its best class (sigmoid of the largest logit), then NMS, greedy in
  score order (ties: the lower anchor index first, as TensorFlow's NMS), then boxes clipped to the
  image. The reference's default is class-agnostic ("global") NMS; so is TFLite's fast
  TFLite_Detection_PostProcess that Model Maker exports. Per-class NMS is an option.

Defaults differ from the reference's Keras model in one place, on purpose: hard NMS
(``soft_nms_sigma=0``), because that is what the TFLite op and the ONNX/OpenVINO NMS ops compute; the
reference's Keras default, Gaussian soft-NMS with sigma 0.5 and score threshold 0.001, is
``PostProcess(..., soft_nms_sigma=0.5, score_threshold=0.001)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeeff.model.detectors import Detector, feature_size


def anchor_boxes(
    image_size: int,
    min_level: int = 3,
    max_level: int = 7,
    num_scales: int = 3,
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5),
    anchor_scale: float = 4.0,
) -> np.ndarray:
    """All anchors as (A, 4) (ymin, xmin, ymax, xmax) in input pixels. An aspect ratio r is width /
    height: the anchor is sqrt(r) wider and sqrt(r) shorter than the square one."""
    out = []
    for level in range(min_level, max_level + 1):
        cells = feature_size(image_size, level)
        stride = image_size / cells  # not 2**level when the image does not halve evenly
        centres = (np.arange(cells) + 0.5) * stride
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        shapes = []
        for octave in range(num_scales):
            base = anchor_scale * stride * 2 ** (octave / num_scales)
            for ratio in aspect_ratios:
                shapes.append((base / np.sqrt(ratio) / 2, base * np.sqrt(ratio) / 2))  # half height, half width
        half = np.asarray(shapes)  # (S*R, 2)
        cy, cx = cy.reshape(-1, 1), cx.reshape(-1, 1)  # (H*W, 1) against (S*R,)
        boxes = np.stack([cy - half[:, 0], cx - half[:, 1], cy + half[:, 0], cx + half[:, 1]], axis=-1)
        out.append(boxes.reshape(-1, 4))
    return np.concatenate(out, axis=0)


def _centre_size(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    return (
        (boxes[..., 0] + boxes[..., 2]) / 2,
        (boxes[..., 1] + boxes[..., 3]) / 2,
        boxes[..., 2] - boxes[..., 0],
        boxes[..., 3] - boxes[..., 1],
    )


def decode_boxes(regressions: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(ty, tx, th, tw) per anchor -> (ymin, xmin, ymax, xmax): centre moved by t times the anchor's
    size, size scaled by exp(t)."""
    ya, xa, ha, wa = _centre_size(anchors)
    ty, tx, th, tw = (regressions[..., i] for i in range(4))
    yc, xc = ty * ha + ya, tx * wa + xa
    h, w = np.exp(th) * ha, np.exp(tw) * wa
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)


def encode_boxes(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_boxes`: the regression targets that training assigns to an anchor."""
    ya, xa, ha, wa = _centre_size(anchors)
    y, x, h, w = _centre_size(boxes)
    return np.stack([(y - ya) / ha, (x - xa) / wa, np.log(h / ha), np.log(w / wa)], axis=-1)


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with many; 0 where either box has no area (as TensorFlow's NMS)."""
    ih = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iw = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ih * iw
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    ok = (area > 0) & (areas > 0) & (union > 0)
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    score_threshold: float,
    max_detections: int,
    soft_nms_sigma: float = 0.0,
    groups: np.ndarray | None = None,
    candidates: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS: indices kept, in selection order, and their (possibly decayed) scores.

    A candidate needs a score above ``score_threshold``. Each selected box removes the others whose
    IoU with it is above ``iou_threshold``; with ``soft_nms_sigma > 0`` the rest are decayed by
    exp(-IoU^2 / sigma) instead of kept whole (TensorFlow's NonMaxSuppressionV5 with the reference's
    sigma / 2 convention undone) and drop out when they fall to the threshold. ``groups`` (one id per
    box) limits suppression to boxes of the same group: per-class NMS. ``candidates``: only the
    highest-scoring that many boxes enter (the reference's ``MAX_DETECTION_POINTS`` top-k).
    """
    if soft_nms_sigma <= 0:
        return _hard_nms(boxes, scores, iou_threshold, score_threshold, max_detections, groups, candidates)
    current = scores.astype(np.float64).copy()
    alive = current > score_threshold
    kept, kept_scores = [], []
    while len(kept) < max_detections and alive.any():
        i = int(np.argmax(np.where(alive, current, -np.inf)))  # first maximum: the lowest index on ties
        kept.append(i)
        kept_scores.append(current[i])
        alive[i] = False
        rivals = np.flatnonzero(alive if groups is None else alive & (groups == groups[i]))
        if rivals.size == 0:
            continue
        iou = iou_one_to_many(boxes[i], boxes[rivals])
        if soft_nms_sigma > 0:
            weight = np.where(iou <= iou_threshold, np.exp(-(iou**2) / soft_nms_sigma), 0.0)
        else:
            weight = (iou <= iou_threshold).astype(np.float64)
        current[rivals] *= weight
        alive[rivals] = (weight > 0) & (current[rivals] > score_threshold)  # suppressed even at -inf
    return np.asarray(kept, dtype=np.int64), np.asarray(kept_scores, dtype=np.float64)


def _hard_nms(boxes, scores, iou_threshold, score_threshold, max_detections, groups, candidates):
    """Hard NMS as :func:`nms` computes it, walking the boxes once in score order (a stable sort: the
    lower index first on ties): the next box not yet suppressed is the next argmax. Each selected
    box is compared only with the boxes after it, so the cost is that of the kept boxes, not
    ``max_detections`` passes over every anchor."""
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    order = order[scores[order] > score_threshold]
    if candidates is not None:
        order = order[:candidates]
    cand = boxes[order].astype(np.float64)
    ymin, xmin, ymax, xmax = cand.T
    areas = (ymax - ymin) * (xmax - xmin)
    group = None if groups is None else groups[order]
    alive = np.ones(len(order), dtype=bool)
    kept = []
    for pos in range(len(order)):
        if not alive[pos]:
            continue
        kept.append(order[pos])
        if len(kept) >= max_detections:
            break
        # IoU with every later box at once (suppressed ones too: cheaper than selecting them out),
        # 0 where either box has no area, as iou_one_to_many and TensorFlow's NMS.
        ih = np.clip(np.minimum(ymax[pos], ymax[pos + 1:]) - np.maximum(ymin[pos], ymin[pos + 1:]), 0, None)
        iw = np.clip(np.minimum(xmax[pos], xmax[pos + 1:]) - np.maximum(xmin[pos], xmin[pos + 1:]), 0, None)
        inter = ih * iw
        union = areas[pos] + areas[pos + 1:] - inter
        ok = (areas[pos] > 0) & (areas[pos + 1:] > 0) & (union > 0)
        overlap = np.where(ok, inter / np.where(ok, union, 1.0), 0.0) > iou_threshold
        if group is not None:
            overlap &= group[pos + 1:] == group[pos]
        alive[pos + 1:] &= ~overlap
    kept = np.asarray(kept, dtype=np.int64)
    return kept, scores[kept].astype(np.float64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow for large negative logits."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class PostProcess:
    """Raw detector outputs -> at most ``max_detections`` boxes per image (see the module docstring).

    ``score_threshold`` applies to sigmoid scores (strictly above); the default keeps every candidate,
    as the reference's hard NMS does, so that COCO scoring sees the full 100 detections.
    """

    image_size: int
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    anchor_scale: float = 4.0
    score_threshold: float = float("-inf")
    iou_threshold: float = 0.5
    max_detections: int = 100
    class_agnostic: bool = True
    soft_nms_sigma: float = 0.0
    clip: bool = True
    candidates: int | None = 5000  # top-k boxes entering NMS, as the reference's MAX_DETECTION_POINTS

    def __post_init__(self):
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be at least 1, got {self.max_detections}")
        if self.soft_nms_sigma < 0:
            raise ValueError(f"soft_nms_sigma must be >= 0 (0: hard NMS), got {self.soft_nms_sigma}")

    @classmethod
    def for_detector(cls, row: Detector, **options) -> "PostProcess":
        """The post-processing that matches a detector row's anchors, with NMS ``options``."""
        return cls(
            image_size=row.image_size,
            min_level=row.min_level,
            max_level=row.max_level,
            num_scales=row.num_scales,
            aspect_ratios=row.aspect_ratios,
            anchor_scale=row.anchor_scale,
            **options,
        )

    def anchors(self) -> np.ndarray:
        return anchor_boxes(
            self.image_size, self.min_level, self.max_level, self.num_scales, self.aspect_ratios, self.anchor_scale
        )

    def apply(self, class_logits, box_regressions):
        """(N, A, C) logits and (N, A, 4) regressions -> (boxes (N, K, 4) in pixels as (ymin, xmin,
        ymax, xmax), scores (N, K), classes (N, K) as logit columns, valid_count (N,)), K =
        ``max_detections``. Rows past an image's valid count are padding: zero boxes and scores,
        class -1."""
        logits = np.asarray(class_logits, dtype=np.float64)
        regressions = np.asarray(box_regressions, dtype=np.float64)
        anchors = self.anchors()
        if logits.ndim != 3 or regressions.shape != logits.shape[:2] + (4,) or logits.shape[1] != len(anchors):
            raise ValueError(
                f"expected (N, {len(anchors)}, C) logits and (N, {len(anchors)}, 4) regressions for "
                f"{self.image_size} px, got {logits.shape} and {regressions.shape}"
            )
        n, k = logits.shape[0], self.max_detections
        boxes = np.zeros((n, k, 4), np.float32)
        scores = np.zeros((n, k), np.float32)
        classes = np.full((n, k), -1, np.int32)
        valid = np.zeros((n,), np.int32)
        for b in range(n):
            best = np.argmax(logits[b], axis=-1)
            score = sigmoid(np.take_along_axis(logits[b], best[:, None], axis=-1)[:, 0])
            decoded = decode_boxes(regressions[b], anchors)
            kept, kept_scores = nms(
                decoded,
                score,
                self.iou_threshold,
                self.score_threshold,
                k,
                self.soft_nms_sigma,
                None if self.class_agnostic else best,
                self.candidates,
            )
            chosen = decoded[kept]
            if self.clip:
                chosen = np.clip(chosen, 0.0, float(self.image_size))
            m = len(kept)
            boxes[b, :m], scores[b, :m], classes[b, :m], valid[b] = chosen, kept_scores, best[kept], m
        return boxes, scores, classes, valid
