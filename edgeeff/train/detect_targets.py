"""Training targets for a detector: which anchor answers for which ground-truth box, and with what.

The network's outputs are one class row and one box regression per anchor (in the order of
:func:`edgeeff.model.postprocess.anchor_boxes`), so training needs the same two things per anchor.
This follows google/automl ``efficientdet/anchors.py`` ``AnchorLabeler`` (an ``ArgMaxMatcher`` with
``matched_threshold = unmatched_threshold = 0.5``, ``force_match_for_each_row=True``):

* every anchor takes the ground-truth box it overlaps most; IoU >= ``match_threshold`` makes it a
  positive for that box's class, IoU < ``unmatched_threshold`` a negative (background), anything in
  between is ignored (no loss either way). With the reference's 0.5 / 0.5 there is no ignore band;
  the band exists so a wider one (e.g. 0.4 / 0.5, RetinaNet's) can be asked for;
* every ground-truth box then claims its best anchor even below the threshold, so a small or oddly
  shaped object still teaches the network something (ties between boxes: the lower box index, as
  the reference's argmax);
* class targets are logit columns (0-based) for positives, :data:`BACKGROUND` (-1) for negatives,
  :data:`IGNORE` (-2) for ignored anchors: the reference's convention, where the loss one-hot
  encodes the column (all zeros for -1) and masks -2 out;
* box targets are :func:`edgeeff.model.postprocess.encode_boxes` of the matched box, so decoding
  them with the same anchors gives the box back exactly; zeros for every anchor that is not positive.

Boxes arrive as COCO ``[x, y, width, height]`` in the annotated image's pixels and are mapped into
the detector's input the way the training and evaluation pipelines resize images: scaled by
``size / max(height, width)`` (aspect kept) with padding at the bottom and right, as the reference's
eval-time resize, so one factor maps detections back to the annotated image.

Pure numpy: it runs inside ``tf.data`` through ``tf.numpy_function`` and is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeeff.model.postprocess import encode_boxes

BACKGROUND = -1
IGNORE = -2
MATCH_THRESHOLD = 0.5
UNMATCHED_THRESHOLD = 0.5


def resize_scale(height: int, width: int, size: int) -> float:
    """Factor from the annotated image to the detector's ``size`` x ``size`` input (longer side fits)."""
    return size / max(height, width)


def coco_to_corners(bboxes, scale: float = 1.0) -> np.ndarray:
    """COCO ``[x, y, w, h]`` rows -> (G, 4) ``(ymin, xmin, ymax, xmax)`` multiplied by ``scale``."""
    b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 1], b[:, 0], b[:, 1] + b[:, 3], b[:, 0] + b[:, 2]], axis=-1) * scale


def iou_matrix(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(G, A) IoU of every box with every anchor, both as (ymin, xmin, ymax, xmax); 0 without area."""
    ymin = np.maximum(boxes[:, None, 0], anchors[None, :, 0])
    xmin = np.maximum(boxes[:, None, 1], anchors[None, :, 1])
    ymax = np.minimum(boxes[:, None, 2], anchors[None, :, 2])
    xmax = np.minimum(boxes[:, None, 3], anchors[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    union = area_b[:, None] + area_a[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass(frozen=True)
class AnchorTargets:
    """Per-anchor targets of one image: ``classes`` (A,) int32 columns / -1 / -2, ``boxes`` (A, 4)
    float32 encoded regressions (zero where not positive), ``matched`` (A,) index of the box each
    positive anchor answers for (-1 elsewhere)."""

    classes: np.ndarray
    boxes: np.ndarray
    matched: np.ndarray

    @property
    def num_positives(self) -> int:
        return int((self.classes >= 0).sum())


def label_anchors(
    anchors: np.ndarray,
    gt_boxes,
    gt_classes,
    match_threshold: float = MATCH_THRESHOLD,
    unmatched_threshold: float = UNMATCHED_THRESHOLD,
) -> AnchorTargets:
    """Targets for one image: ``gt_boxes`` (G, 4) as (ymin, xmin, ymax, xmax) in input pixels,
    ``gt_classes`` (G,) logit columns. Boxes without area are dropped (their regression target would
    be log 0); an image without boxes is all background."""
    if not 0.0 <= unmatched_threshold <= match_threshold <= 1.0:
        raise ValueError(f"need 0 <= unmatched_threshold <= match_threshold <= 1, got {unmatched_threshold}, {match_threshold}")
    anchors = np.asarray(anchors, dtype=np.float64)
    boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(gt_classes, dtype=np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} classes")
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, labels = boxes[keep], labels[keep]
    count = len(anchors)
    classes = np.full(count, BACKGROUND, np.int32)
    targets = np.zeros((count, 4), np.float32)
    matched = np.full(count, -1, np.int64)
    if len(boxes) == 0:
        return AnchorTargets(classes, targets, matched)

    iou = iou_matrix(boxes, anchors)  # (G, A)
    best_box = iou.argmax(axis=0)
    best_iou = iou.max(axis=0)
    matched = np.where(best_iou >= match_threshold, best_box, -1)
    ignored = (best_iou >= unmatched_threshold) & (best_iou < match_threshold)
    # Forced matches: each box's best anchor; where two boxes pick one anchor, the lower box index wins.
    best_anchor = iou.argmax(axis=1)
    for g in range(len(boxes) - 1, -1, -1):
        matched[best_anchor[g]] = g
    ignored &= matched < 0

    positive = matched >= 0
    classes[positive] = labels[matched[positive]]
    classes[ignored] = IGNORE
    targets[positive] = encode_boxes(boxes[matched[positive]], anchors[positive])
    return AnchorTargets(classes, targets, matched)
