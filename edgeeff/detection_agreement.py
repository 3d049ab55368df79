"""Does a converted detector find the boxes the Keras model finds? Validation by box agreement.

A converted artifact (TFLite, ONNX, OpenVINO, int8 or not) is judged against the Keras reference on
the same images, with no annotations needed: the reference's confident detections stand in for the
ground truth. Two views, both from :meth:`edgeeff.model.postprocess.PostProcess.apply` outputs:

* :func:`box_agreement`: how many confident reference boxes the candidate finds again (greedy
  one-to-one matching, same class, IoU threshold), how closely (IoU, score difference), and the COCO
  mAP / AP50 of the candidate's detections scored by pycocotools against those reference boxes
  (through :mod:`edgeeff.detection_metrics`, never a hand-written AP);
* :func:`raw_output_figures`: the network's raw outputs side by side, for when box agreement cannot
  judge: an untrained detector's scores all sit near the 0.01 prior, so no reference box is
  confident and there is nothing to match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeeff.detection_metrics import coco_scores, to_coco_results
from edgeeff.model.postprocess import iou_one_to_many

NO_CONFIDENT_NOTE = (
    "no reference detection reached the confidence threshold, so box agreement cannot judge this "
    "artifact; compare the raw outputs instead"
)


@dataclass(frozen=True)
class Detections:
    """Post-processed outputs of one model on a list of images, as ``PostProcess.apply`` returns
    them: boxes (N, K, 4) in pixels as (ymin, xmin, ymax, xmax), scores (N, K), classes (N, K) as
    logit columns, valid (N,); rows of image i past valid[i] are padding and never read."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    valid: np.ndarray

    def __post_init__(self):
        n, k = np.shape(self.scores)[:2] if np.ndim(self.scores) == 2 else (-1, -1)
        if (
            np.shape(self.boxes) != (n, k, 4)
            or np.shape(self.classes) != (n, k)
            or np.shape(self.valid) != (n,)
            or (n > 0 and not 0 <= int(np.min(self.valid)) <= int(np.max(self.valid)) <= k)
        ):
            raise ValueError(
                f"expected boxes (N, K, 4), scores (N, K), classes (N, K), valid (N,) with 0 <= valid <= K; got "
                f"{np.shape(self.boxes)}, {np.shape(self.scores)}, {np.shape(self.classes)}, {np.shape(self.valid)}"
            )

    @classmethod
    def from_apply(cls, result_tuple) -> "Detections":
        """From ``PostProcess.apply``'s (boxes, scores, classes, valid)."""
        boxes, scores, classes, valid = result_tuple
        return cls(np.asarray(boxes), np.asarray(scores), np.asarray(classes), np.asarray(valid))

    @classmethod
    def concat(cls, parts: list["Detections"]) -> "Detections":
        """Batches joined in order. Parts with fewer rows per image (another ``max_detections``) are
        padded as ``apply`` pads: zero boxes and scores, class -1."""
        if not parts:
            raise ValueError("nothing to concatenate")
        k = max(p.scores.shape[1] for p in parts)

        def pad(a, fill):
            width = [(0, 0), (0, k - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
            return np.pad(a, width, constant_values=fill)

        return cls(
            np.concatenate([pad(p.boxes, 0) for p in parts]),
            np.concatenate([pad(p.scores, 0) for p in parts]),
            np.concatenate([pad(p.classes, -1) for p in parts]),
            np.concatenate([p.valid for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.valid)

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes, scores, classes) of image i's valid rows only."""
        m = int(self.valid[i])
        return (
            np.asarray(self.boxes[i, :m], np.float64),
            np.asarray(self.scores[i, :m], np.float64),
            np.asarray(self.classes[i, :m], np.int64),
        )


def _match_image(ref, cand, confident: float, iou_match: float):
    """Greedy one-to-one matching on one image: confident reference boxes in score order (highest
    first, ties by row), each takes the unmatched same-class candidate with the highest IoU if that
    IoU reaches ``iou_match``. Returns (reference count, [(iou, |score difference|)] of matches)."""
    r_boxes, r_scores, r_classes = ref
    c_boxes, c_scores, c_classes = cand
    order = [i for i in np.argsort(-r_scores, kind="stable") if r_scores[i] >= confident]
    free = np.ones(len(c_scores), bool)
    pairs = []
    for i in order:
        pool = np.flatnonzero(free & (c_classes == r_classes[i]))
        if pool.size == 0:
            continue
        ious = iou_one_to_many(r_boxes[i], c_boxes[pool])
        best = int(np.argmax(ious))
        if ious[best] >= iou_match:
            free[pool[best]] = False
            pairs.append((float(ious[best]), abs(float(r_scores[i]) - float(c_scores[pool[best]]))))
    return len(order), pairs


def reference_as_truth(reference: Detections, confident: float) -> dict:
    """A COCO ground-truth dict from the reference's confident detections: image ids 0..N-1,
    category id c + 1 for logit column c (as :func:`to_coco_results` maps them), one category per
    column present. Annotation ids start at 1: pycocotools marks an unmatched box with id 0, so a
    ground truth of id 0 would never count as found."""
    images, annotations, columns = [], [], set()
    for b in range(len(reference)):
        images.append({"id": b})
        boxes, scores, classes = reference.image(b)
        for (ymin, xmin, ymax, xmax), score, c in zip(boxes, scores, classes):
            if score < confident:
                continue
            w, h = float(xmax - xmin), float(ymax - ymin)
            columns.add(int(c))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": b,
                    "category_id": int(c) + 1,
                    "bbox": [float(xmin), float(ymin), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c + 1, "name": str(c)} for c in sorted(columns)]
    return {"images": images, "annotations": annotations, "categories": categories}


def box_agreement(reference: Detections, candidate: Detections, confident: float = 0.3, iou_match: float = 0.5) -> dict:
    """How well ``candidate`` reproduces the reference's confident detections (JSON-able dict).

    ``reference_boxes``: reference detections with score >= ``confident``; ``matched``: the fraction
    of them that a candidate detection of the same class covers with IoU >= ``iou_match`` (see
    :func:`_match_image`; every valid candidate row may match, whatever its score, so that a score
    sliding just under ``confident`` shows in ``score_diff_*`` rather than as a lost box);
    ``matched_iou_mean/min`` and ``score_diff_mean/max`` over matched pairs; ``map_vs_reference`` and
    ``ap50_vs_reference``: pycocotools mAP@[.5:.95] and AP50 of all valid candidate rows against
    the confident reference boxes as ground truth. COCO scores only categories with ground truth,
    so candidate boxes of a class the reference never confidently found cost no AP (they still
    cannot match). With no confident reference box the figures are None and ``note`` says why.
    """
    if len(reference) != len(candidate):
        raise ValueError(f"reference has {len(reference)} images, candidate {len(candidate)}")
    n = len(reference)
    total, pairs = 0, []
    for b in range(n):
        count, found = _match_image(reference.image(b), candidate.image(b), confident, iou_match)
        total += count
        pairs += found
    out = {"images": n, "reference_boxes": total, "confident": confident, "iou_match": iou_match}
    if total == 0:
        keys = ("matched", "matched_iou_mean", "matched_iou_min", "score_diff_mean", "score_diff_max",
                "map_vs_reference", "ap50_vs_reference")
        return {**out, **dict.fromkeys(keys), "note": NO_CONFIDENT_NOTE}
    ious = np.array([p[0] for p in pairs])
    diffs = np.array([p[1] for p in pairs])
    results = to_coco_results(list(range(n)), candidate.boxes, candidate.scores, candidate.classes, candidate.valid)
    scores = coco_scores(reference_as_truth(reference, confident), results)
    return {
        **out,
        "matched": len(pairs) / total,
        "matched_iou_mean": float(ious.mean()) if pairs else None,
        "matched_iou_min": float(ious.min()) if pairs else None,
        "score_diff_mean": float(diffs.mean()) if pairs else None,
        "score_diff_max": float(diffs.max()) if pairs else None,
        "map_vs_reference": scores["map"],
        "ap50_vs_reference": scores["ap50"],
    }


def _cosine_per_image(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of the cosine between the flattened arrays; two all-zero images agree (1),
    one all-zero image against a non-zero one does not (0)."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both = na * nb
    cos = np.where(both > 0, np.sum(a * b, axis=1) / np.where(both > 0, both, 1.0), np.where(na + nb == 0, 1.0, 0.0))
    return float(cos.mean())


def raw_output_figures(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Raw detector outputs (N, A, 4 + C), box regressions first, then class logits, compared:
    ``max_rel_diff`` = max |ref - cand| / max |ref| over everything; ``class_logit_cosine`` and
    ``box_cosine``: mean over images of the cosine of the flattened parts; ``top_score_agreement``:
    fraction of images whose top anchor (argmax over anchors of the largest logit) is the same;
    ``snr_db``: the signal-to-noise ratio of the whole raw output (what per-block sensitivity ranks
    by, as it does a classifier's logits). These judge an artifact even when no reference box is
    confident (untrained weights)."""
    ref = np.asarray(reference, np.float64)
    cand = np.asarray(candidate, np.float64)
    if ref.shape != cand.shape or ref.ndim != 3 or ref.shape[-1] < 5:
        raise ValueError(f"expected two (N, A, 4 + C) arrays of one shape, got {ref.shape} and {cand.shape}")
    diff, scale = float(np.max(np.abs(ref - cand))), float(np.max(np.abs(ref)))
    top = np.argmax(ref[..., 4:].max(axis=-1), axis=1) == np.argmax(cand[..., 4:].max(axis=-1), axis=1)
    noise = float(np.sum((ref - cand) ** 2))
    return {
        "images": int(ref.shape[0]),
        "max_rel_diff": diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf")),
        "class_logit_cosine": _cosine_per_image(ref[..., 4:], cand[..., 4:]),
        "box_cosine": _cosine_per_image(ref[..., :4], cand[..., :4]),
        "top_score_agreement": float(top.mean()),
        "snr_db": 10 * float(np.log10(np.sum(ref**2) / noise)) if noise > 0 else float("inf"),
    }
