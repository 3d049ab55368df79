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


def coco_scores(annotations: str | Path | dict, results: list[dict]) -> dict:
    """{"map", "ap50", "ap75", "per_class": {category name: AP}} of ``results`` against the ground
    truth (a COCO JSON path or dict). No results scores 0, not an error: a detector that finds
    nothing has an AP, and it is zero."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise BackendMissingError("COCO scoring needs pycocotools: pip install pycocotools") from None

    data = json.loads(Path(annotations).read_text()) if isinstance(annotations, (str, Path)) else copy.deepcopy(annotations)
    names = {c["id"]: c["name"] for c in data["categories"]}
    if not results:
        return {"map": 0.0, "ap50": 0.0, "ap75": 0.0, "per_class": {name: 0.0 for name in names.values()}}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
        truth = COCO()
        truth.dataset = data
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(copy.deepcopy(results)), iouType="bbox")
        evaluation.evaluate()
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
