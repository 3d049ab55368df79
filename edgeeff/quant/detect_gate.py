"""Detection checks of the CI gate: the COCO mAP cost of quantizing a trained detector.

A check whose variant is a detector (``efficientdet-lite0``) names its own data: ``weights`` an
``edgeeff train-detect`` run directory, ``images`` a held-out COCO annotations JSON (its images beside
it, as ``read_coco`` reads them), ``calibration`` an image folder. Each int8 target is converted as
the classifier checks convert (``require_valid=False``: the gate judges by its own rules); the fp32
Keras detector and every artifact run on the same letterboxed images, through the same
:class:`edgeeff.model.postprocess.PostProcess`, their boxes mapped back to the annotated images, and
pycocotools scores both. The drop (fp32 minus int8, mAP points) is paired: a seeded bootstrap over
images draws the same images for both (:func:`edgeeff.detection_metrics.paired_map_drop`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from edgeeff.errors import EdgeeffError

BOOTSTRAP_RESAMPLES = 200  # 96 images, 100 detections each: ~20 s of pycocotools per pair on a shared core (one evaluate, 200 accumulates)


def is_detection_check(check) -> bool:
    from edgeeff.model.detectors import is_detector

    return is_detector(check.variant)


def refusal(check, error: type[EdgeeffError]) -> None:
    """Raise ``error`` when a detection check lacks what it needs or names what is not there."""
    name = f"{check.variant} ({', '.join(check.targets)})"
    if check.weights is None:
        raise error(f"detection check {name}: weights = an edgeeff train-detect run directory (an untrained head's mAP "
                    "says nothing about quantization)")
    for key, value, kind in (("images", check.images, "a COCO annotations JSON"), ("calibration", check.calibration, "an image folder")):
        if value is None:
            raise error(f"detection check {name}: needs {key} = {kind}")
        if not Path(value).exists():
            raise error(f"detection check {name}: {key} {value} does not exist")
    from edgeeff.data.voc import is_voc

    if not Path(check.images).is_file() and not is_voc(check.images):
        raise error(f"detection check {name}: images must be a COCO annotations JSON file or a Pascal VOC folder, not {check.images}")


def evaluation_manifest(annotations: Path) -> dict:
    """What a detection drop was measured on: the annotations file and every image it lists."""
    from edgeeff.data.coco import annotations_digest, read_coco
    from edgeeff.fsio import sha256_of

    data = read_coco(annotations)
    digest = hashlib.sha256(f"annotations:{annotations_digest(annotations)}\n".encode())
    for im in sorted(data.images, key=lambda im: im.image_id):
        digest.update(f"{im.image_id}:{sha256_of(im.path)}\n".encode())
    return {"images": len(data.images), "sha256": digest.hexdigest()}


def coco_results(predict: Callable[[np.ndarray], np.ndarray], images, size: int, card, post, category_ids: list[int],
                 batch: int = 8) -> list[dict]:
    """COCO results of a raw-output ``predict`` on annotated images: letterboxed as exported, post-processed,
    boxes scaled back to each annotated image, logit column c reported as ``category_ids[c]``."""
    from edgeeff.data.images import Sample
    from edgeeff.data.preprocess import letterbox_scale
    from edgeeff.detection_metrics import to_coco_results
    from edgeeff.evaluate import batches
    from edgeeff.model.efficientdet import split_raw

    by_path = {im.path: im for im in images}
    results: list[dict] = []
    for good, pixels, bad in batches([Sample(im.path, None) for im in images], size, card, batch=batch):
        if bad:
            raise EdgeeffError(f"cannot read {bad[0][0].path}: {bad[0][1]}")
        chunk = [by_path[s.path] for s in good]
        boxes, scores, classes, valid = post.apply(*split_raw(predict(pixels)))
        scales = [1.0 / letterbox_scale(im.height, im.width, size) for im in chunk]
        results += to_coco_results([im.image_id for im in chunk], boxes, scores, classes, valid, scales, category_ids)
    return results


def run_detection_check(check, config, say: Callable[[str], None], error: type[EdgeeffError]) -> list[dict]:
    """Rows of one detection check: every int8 target against the fp32 Keras detector, mAP and paired drop."""
    from edgeeff.artifact import open_artifact
    from edgeeff.convert import convert
    from edgeeff.data.preprocess import PreprocessCard
    from edgeeff.detect import build_reference, choose_detector_weights, detection_card, post_processing
    from edgeeff.detection_metrics import paired_map_drop
    from edgeeff.model.detectors import get_detector
    from edgeeff.model.efficientdet import raw_output_model
    from edgeeff.data.coco import read_coco

    refusal(check, error)
    data = read_coco(check.images)
    weights = Path(check.weights).expanduser()
    weights = str(weights if weights.is_absolute() else Path(config.source).parent / weights)  # as written in the config, by its folder
    row, chosen = choose_detector_weights(get_detector(check.variant), weights)
    if not chosen.categories:
        raise error(f"detection check {check.variant}: weights {check.weights} carry no categories; "
                    "give an edgeeff train-detect run directory")
    category_ids = [int(c["id"]) for c in chosen.categories]
    if sorted(category_ids) != sorted(int(c["id"]) for c in data.categories):
        raise error(f"detection check {check.variant}: {check.images} has categories "
                    f"{[c['id'] for c in data.categories]}, the run {category_ids}")
    manifest = evaluation_manifest(Path(check.images))
    images = list(data.images)
    say(f"{check.variant}: scoring the fp32 Keras detector on {len(images)} images")
    reference = raw_output_model(build_reference(row, chosen))
    card, post = detection_card(row), post_processing(row)
    fp32 = coco_results(lambda x: np.asarray(reference.predict(x, verbose=0, batch_size=len(x))), images, row.image_size, card, post,
                        category_ids)
    from edgeeff.data import voc

    # convert validates on the held-out photos: a VOC folder's images, or images/ beside a COCO JSON
    beside = voc.images_root(check.images) if Path(check.images).is_dir() else Path(check.images).parent / "images"
    validation_images = beside if beside.is_dir() else None
    rows = []
    for target in check.targets:
        say(f"{check.variant} {target}: converting")
        meta = convert(check.variant, target, weights=weights, out=config.cache / "artifacts", calibration=check.calibration,
                       calibration_count=config.calibration_count, seed=config.seed, images=validation_images, require_valid=False)
        folder = meta["path"]
        meta, runner = open_artifact(folder, threads=config.threads)
        if [int(c["id"]) for c in meta.get("categories") or ()] != category_ids:
            raise error(f"{folder}: the artifact's categories differ from the run's; convert again (--force)")
        size, artifact_card = meta["preprocessing"]["resolution"], PreprocessCard.from_dict(meta["preprocessing"])

        def predict(x):  # one image at a time, as validation runs artifacts
            return np.concatenate([runner.predict(x[i:i + 1]) for i in range(len(x))])

        say(f"{check.variant} {target}: scoring {len(images)} images")
        quantized = coco_results(predict, images, size, artifact_card, post, category_ids)
        say(f"{check.variant} {target}: paired bootstrap ({BOOTSTRAP_RESAMPLES} resamples of the images)")
        drop = paired_map_drop(data.coco, fp32, quantized, BOOTSTRAP_RESAMPLES, config.seed)
        rows.append({
            "task": "detect", "variant": check.variant, "weights": check.weights, "target": target, "images": drop["images"],
            "fp32_map": drop["reference_map"], "quantized_map": drop["candidate_map"], "drop_points": drop["drop_points"],
            "drop_ci95_points": drop["ci95_points"], "bootstrap_resamples": drop["resamples"],
            "boxes_matched": (meta["validation"].get("boxes") or {}).get("matched"),
            "logit_cosine": meta["validation"].get("class_logit_cosine"),
            "evaluation": manifest, "conversion_failures": meta["validation"].get("failures", []), "artifact": folder,
        })
    return rows


def judge_row(row: dict, max_map_drop: float, budget_on: str, entry: dict | None, tolerance: float) -> list[str]:
    """Failures of one detection row against the mAP budget and its baseline entry (if any)."""
    name = f"{row['variant']} {row['target']}"
    low, high = row["drop_ci95_points"]
    measured = row["drop_points"] if budget_on == "point" else high
    what = "mAP drop" if budget_on == "point" else "upper 95% bound of the mAP drop"
    failures = []
    if measured > max_map_drop:
        failures.append(f"{name}: {what} {measured:.2f} points > max_map_drop {max_map_drop:g} (budget)")
    if entry is not None and row["drop_points"] > entry["drop_points"] + tolerance:
        failures.append(f"{name}: mAP drop {row['drop_points']:.2f} points grew by {row['drop_points'] - entry['drop_points']:.2f} "
                        f"over the baseline's {entry['drop_points']:.2f} (tolerance {tolerance:g})")
    return failures


def table_rows(rows: list[dict]) -> list[dict]:
    """Detection rows as the check command prints them."""
    return [{"pair": f"{r['variant']} {r['target']}", "map": f"{r['fp32_map']:.3f} -> {r['quantized_map']:.3f}",
             "drop": f"{r['drop_points']:+.2f}", "ci": "[{:+.2f}, {:+.2f}]".format(*r["drop_ci95_points"]),
             "matched": "-" if r.get("boxes_matched") is None else f"{r['boxes_matched']:.1%}",
             "baseline": "-" if r.get("baseline_drop_points") is None else f"{r['baseline_drop_points']:+.2f}"} for r in rows]


TABLE_COLUMNS = [("pair", "detector target"), ("map", "mAP fp32 -> int8"), ("drop", "drop pts"), ("ci", "paired 95% CI (bootstrap)"),
                 ("matched", "boxes matched"), ("baseline", "baseline drop")]
