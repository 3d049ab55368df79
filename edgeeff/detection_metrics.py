"""COCO detection scores with pycocotools, the implementation every published COCO AP comes from.

Detections arrive as :meth:`edgeeff.model.postprocess.PostProcess.apply` returns them (boxes as
ymin, xmin, ymax, xmax in model-input pixels, logit columns as classes) and are turned into COCO
results here; :func:`coco_scores` then reports mAP@[.5:.95], AP50, AP75 and the AP of each
category (IoU .5:.95, all areas, 100 detections: COCO's headline setting).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeeff.errors import BackendMissingError


def to_coco_results(
    image_ids: Sequence[int],
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    valid: np.ndarray,
    scale: float | Sequence[float] = 1.0,
    category_ids: Sequence[int] | None = None,
) -> list[dict]:
    """COCO result dicts ([x, y, w, h] boxes) from post-processed batches. ``scale`` maps model-input
    pixels back to the annotated image (one per image or one for all); ``category_ids[c]`` is the
    COCO id of logit column c (default c + 1, as COCO ids start at 1)."""
    scales = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(image_ids),))
    out = []
    for b, image_id in enumerate(image_ids):
        for k in range(int(valid[b])):
            ymin, xmin, ymax, xmax = (float(v) * scales[b] for v in boxes[b, k])
            c = int(classes[b, k])
            out.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[c]) if category_ids is not None else c + 1,
                    "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                    "score": float(scores[b, k]),
                }
            )
    return out


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise BackendMissingError("COCO scoring needs pycocotools: pip install pycocotools") from None
    return COCO, COCOeval


def _truth(annotations: str | Path | dict) -> dict:
    return json.loads(Path(annotations).read_text()) if isinstance(annotations, (str, Path)) else copy.deepcopy(annotations)


def _evaluated(data: dict, results: list[dict], headline_only: bool = False):
    """A COCOeval (bbox) of ``results`` against ``data`` after ``evaluate()``: per image and category,
    before the images are pooled; quiet. ``headline_only``: only the area range "all" and 100
    detections, what mAP@[.5:.95] reads (a quarter of the work)."""
    COCO, COCOeval = _pycocotools()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
        truth = COCO()
        truth.dataset = data
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(copy.deepcopy(results)), iouType="bbox")
        if headline_only:
            evaluation.params.areaRng, evaluation.params.areaRngLbl = evaluation.params.areaRng[:1], ["all"]
            evaluation.params.maxDets = [100]
        evaluation.evaluate()
    return evaluation


def _mean_precision(evaluation) -> float:
    """mAP@[.5:.95] (all areas, 100 detections: COCO's stats[0]) of an accumulated COCOeval."""
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    values = precision[precision > -1]
    return float(values.mean()) if values.size else -1.0


def coco_scores(annotations: str | Path | dict, results: list[dict]) -> dict:
    """{"map", "ap50", "ap75", "per_class": {category name: AP}} of ``results`` against the ground
    truth (a COCO JSON path or dict). No results scores 0, not an error: a detector that finds
    nothing has an AP, and it is zero."""
    _pycocotools()
    data = _truth(annotations)
    names = {c["id"]: c["name"] for c in data["categories"]}
    if not results:
        return {"map": 0.0, "ap50": 0.0, "ap75": 0.0, "per_class": {name: 0.0 for name in names.values()}}
    evaluation = _evaluated(data, results)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.accumulate()
        evaluation.summarize()
    # precision: [IoU thresholds, recall points, categories, area ranges, max detections]; -1 marks
    # a category with no ground truth. Area "all" is index 0, 100 detections the last index.
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, cat_id in enumerate(evaluation.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        per_class[names[cat_id]] = float(values.mean()) if values.size else float("nan")
    stats = evaluation.stats
    return {"map": float(stats[0]), "ap50": float(stats[1]), "ap75": float(stats[2]), "per_class": per_class}


class _Resampler:
    """One evaluated result set, re-pooled over any multiset of its images: COCO's ``accumulate``
    on the per-image evaluations of the drawn images (an image drawn twice counts twice), so a
    bootstrap re-scores without re-matching boxes. No results: mAP 0 whatever the draw."""

    def __init__(self, data: dict, results: list[dict], image_ids: list[int]):
        self.image_ids = list(image_ids)
        self.evaluation = None
        if results:
            evaluation = _evaluated(data, results, headline_only=True)
            order = list(evaluation.params.imgIds)
            self.per_image = evaluation.evalImgs
            self.blocks = len(evaluation.params.catIds) * len(evaluation.params.areaRng)
            self.width = len(order)
            self.column = {image_id: order.index(image_id) for image_id in self.image_ids}
            self.evaluation = evaluation

    def map(self, draw: np.ndarray) -> float:
        if self.evaluation is None:
            return 0.0
        columns = [self.column[self.image_ids[i]] for i in draw]
        ev = self.evaluation
        ev.evalImgs = [self.per_image[block * self.width + c] for block in range(self.blocks) for c in columns]
        ev.params.imgIds = [self.image_ids[i] for i in draw]
        ev._paramsEval = copy.copy(ev.params)
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate()
        return max(_mean_precision(ev), 0.0)


def paired_map_drop(annotations: str | Path | dict, reference: list[dict], candidate: list[dict], resamples: int = 200,
                    seed: int = 0) -> dict:
    """mAP@[.5:.95] of two result sets on the same images and the drop (reference minus candidate,
    in points) with a paired bootstrap over images: each resample draws image ids with replacement,
    the same draw for both, and both mAPs are recomputed by pycocotools on it. Returns
    ``reference_map``, ``candidate_map``, ``drop_points``, ``ci95_points`` (2.5th and 97.5th
    percentiles of the resampled drops), ``resamples``, ``images``, ``seed``."""
    _pycocotools()
    data = _truth(annotations)
    image_ids = [int(im["id"]) for im in data["images"]]
    if not image_ids:
        raise ValueError("the annotations list no images")
    ref, cand = _Resampler(data, reference, image_ids), _Resampler(data, candidate, image_ids)
    everything = np.arange(len(image_ids))
    ref_map, cand_map = ref.map(everything), cand.map(everything)
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(resamples):
        draw = rng.integers(0, len(image_ids), len(image_ids))
        drops.append(100.0 * (ref.map(draw) - cand.map(draw)))
    low, high = (np.percentile(drops, [2.5, 97.5]) if drops else (float("nan"), float("nan")))
    return {"reference_map": ref_map, "candidate_map": cand_map, "drop_points": 100.0 * (ref_map - cand_map),
            "ci95_points": [float(low), float(high)], "resamples": resamples, "images": len(image_ids), "seed": seed}
