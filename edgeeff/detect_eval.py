"""``edgeeff eval``'s job for a detector artifact (``"task": "detect"`` in its edgeeff.json): COCO
scores against annotations, the same for the Keras fp32 detector it was converted from, the
artifact's agreement with that detector's boxes, and the runtime and post-processing times.

The artifact's runner (any device) returns the raw (N, anchors, 4 + C) tensor; the post-processing
(:class:`edgeeff.model.postprocess.PostProcess`, numpy) runs here, timed apart from the runtime, on
one image at a time so that both medians are per image. Boxes go back from the letterboxed input
to the annotated image's pixels by :func:`edgeeff.data.preprocess.letterbox_scale`; logit column c
is the metadata's ``categories[c]``. Scores come from pycocotools (:mod:`edgeeff.detection_metrics`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeeff.errors import EdgeeffError

NEEDS_JSON = ("a detector is scored against COCO annotations: give --images ANNOTATIONS.json "
              "(the images in the json's folder, as its file_name says) or a Pascal VOC folder (Annotations/*.xml)")
NO_CATEGORIES_NOTE = "the artifact records no categories (heads untrained, or a weights file): logit column c is scored as COCO id c + 1"


@dataclass
class DetectEvalResult:
    row: dict
    details: dict
    source: dict
    meta: dict = field(default_factory=dict)
    runner: dict | None = None


def refuse_inputs(job) -> None:
    """One line for inputs a detector cannot be scored on, before anything loads."""
    if job.images is None:
        raise EdgeeffError(NEEDS_JSON)
    images = Path(job.images)
    if images.is_dir():
        from edgeeff.data.voc import is_voc

        if is_voc(images):
            return _refuse_options(job)
        raise EdgeeffError(f"--images {images} is a folder without Pascal VOC annotations; {NEEDS_JSON}")
    if not images.is_file():
        raise EdgeeffError(f"--images {images} not found; {NEEDS_JSON}")
    _refuse_options(job)


def _refuse_options(job) -> None:
    if job.preprocessing is not None:
        raise EdgeeffError(f"{job.artifact} records its own preprocessing in edgeeff.json; --preprocessing is for bare model files")
    if job.labels_path:
        raise EdgeeffError("--labels is for classifiers; a detector's class names come from its edgeeff.json categories")
    if job.compare_local:
        raise EdgeeffError("--compare-local compares classifier outputs; detectors are not supported yet")


def post_processing_of(meta: dict):
    """The :class:`PostProcess` the artifact's metadata records."""
    from edgeeff.model.postprocess import PostProcess

    recorded = meta["post_processing"]
    known = {f.name for f in fields(PostProcess)}
    options = {k: v for k, v in recorded.items() if k in known}
    options["aspect_ratios"] = tuple(options.get("aspect_ratios", PostProcess.aspect_ratios))
    return PostProcess(**options)


def category_ids(meta: dict, truth_categories: Sequence[dict], source: str) -> tuple[list[int], list[str]]:
    """COCO id of each logit column, and notes. The artifact's categories (a train-detect run's) are
    found in the annotations by id, or by name where every name is there under other ids; without
    them column c is COCO id c + 1."""
    classes = int(meta["raw_output"]["classes"])
    recorded = meta.get("categories")
    if not recorded:
        return list(range(1, classes + 1)), [NO_CATEGORIES_NOTE]
    if len(recorded) != classes:
        raise EdgeeffError(f"the artifact lists {len(recorded)} categories for {classes} logit columns; convert again")
    truth = {int(c["id"]): c["name"] for c in truth_categories}
    by_name = {name: id_ for id_, name in truth.items()}
    if any(truth.get(int(c["id"])) != c["name"] for c in recorded) and all(c["name"] in by_name for c in recorded):
        # the same classes numbered otherwise (a Pascal VOC folder numbers its own): matched by name, said in a note
        return [by_name[c["name"]] for c in recorded], [f"{source} numbers the artifact's categories otherwise: matched by name"]
    clash = [f"{c['id']}: {c['name']} vs {truth[int(c['id'])]}" for c in recorded
             if int(c["id"]) in truth and truth[int(c["id"])] != c["name"]]
    if clash or not any(int(c["id"]) in truth for c in recorded):
        why = f"ids name other classes ({'; '.join(clash[:3])})" if clash else "no category id in common"
        raise EdgeeffError(f"{source} does not label the artifact's categories: {why}; score it on annotations of the "
                           "categories it was trained on")
    return [int(c["id"]) for c in recorded], []


def image_results(images: Sequence, detections, resolution: int, columns: Sequence[int]) -> list[dict]:
    """COCO result dicts of ``detections`` (:class:`edgeeff.detection_agreement.Detections`, boxes
    in letterboxed input pixels) on ``images`` (``DetectionImage``): boxes scaled back to each
    annotated image, logit columns turned into COCO ids."""
    from edgeeff.data.preprocess import letterbox_scale
    from edgeeff.detection_metrics import to_coco_results

    scales = [1.0 / letterbox_scale(im.height, im.width, resolution) for im in images]
    return to_coco_results([im.image_id for im in images], detections.boxes, detections.scores, detections.classes,
                           detections.valid, scales, columns)


def known(per_class: dict) -> dict:
    """AP per class with None, not NaN, for a class without ground truth in the scored images (JSON has no NaN)."""
    return {name: (None if ap != ap else ap) for name, ap in per_class.items()}


def median_ms(values_ns: Sequence[int]) -> float | None:
    return float(np.median(values_ns)) / 1e6 if len(values_ns) else None


def reference_detector(meta: dict):
    """The Keras fp32 detector the artifact was converted from (same detector, size and weights)."""
    from edgeeff.detect import build_reference, choose_detector_weights
    from edgeeff.model.detectors import get_detector

    label = meta["weights"]["label"]
    weights = None if label.startswith("backbone ") else label
    row, chosen = choose_detector_weights(get_detector(meta["variant"]), weights)
    resolution = meta["preprocessing"]["resolution"]
    if row.image_size != resolution:
        raise EdgeeffError(f"the Keras {row.name} from {label} takes {row.image_size} px, the artifact {resolution} px; "
                           "convert again, or --reference none")
    recorded = meta["weights"].get("sha256")
    if recorded and chosen.sha256 and recorded != chosen.sha256:
        raise EdgeeffError(f"the weights of {label} changed since the conversion; convert again, or --reference none")
    return build_reference(row, chosen)


def run_detect_eval(job, device, progress_console=None, before_loading=lambda: None) -> DetectEvalResult:
    """Score a detector artifact folder (``job.artifact``) on ``job.images`` (a COCO JSON); ``job``
    is an :class:`edgeeff.accuracy.AccuracyJob`."""
    from rich.console import Console
    from rich.progress import Progress

    from edgeeff import report
    from edgeeff.artifact import read_metadata
    from edgeeff.data.preprocess import PreprocessCard, load_image
    from edgeeff.detection_agreement import Detections, box_agreement
    from edgeeff.detection_metrics import coco_scores
    from edgeeff.fsio import sha256_of
    from edgeeff.model.efficientdet import split_raw
    from edgeeff.data.coco import read_coco

    refuse_inputs(job)
    folder = Path(job.artifact)
    meta = read_metadata(folder)
    annotations = Path(job.images)
    dataset = read_coco(annotations)
    images = list(dataset.images)[: job.limit] if job.limit else list(dataset.images)
    truth = dataset.subset([im.image_id for im in images])
    columns, notes = category_ids(meta, dataset.categories, str(annotations))
    resolution, card = meta["preprocessing"]["resolution"], PreprocessCard.from_dict(meta["preprocessing"])
    post = post_processing_of(meta)
    source = {"images": str(annotations.resolve()), "image_count": len(images), "images_root": str(dataset.root.resolve()),
              "artifact": str(folder.resolve()), "artifact_sha256": sha256_of(folder / meta["artifact"]), "target": meta["target"],
              "weights": report.weights_text(meta["weights"]["label"])}
    name = f"{meta['variant'] or folder.name} {meta['target']}" + (f" on {device.name}" if device.name != "cpu" else "")
    before_loading()
    runner = device.runner(folder, meta, job.threads, job.accept_new_host_key)
    try:
        ref_model = reference_detector(meta) if job.reference == "keras" else None
        found, ref_found, runtime_ns, post_ns = [], [], [], []
        with Progress(console=progress_console or Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"evaluating {name}", total=len(images))
            for start in range(0, len(images), job.batch):
                chunk = images[start:start + job.batch]
                pixels = np.stack([load_image(im.path, resolution, card) for im in chunk])
                if start == 0:
                    runner.predict(pixels[:1])  # warm-up, untimed
                for i in range(len(chunk)):
                    t0 = time.perf_counter_ns()
                    raw = np.asarray(runner.predict(pixels[i:i + 1]))
                    t1 = time.perf_counter_ns()
                    found.append(Detections.from_apply(post.apply(*split_raw(raw))))
                    t2 = time.perf_counter_ns()
                    runtime_ns.append(t1 - t0)
                    post_ns.append(t2 - t1)
                if ref_model is not None:
                    logits, regressions = ref_model.predict(pixels, verbose=0)
                    ref_found.append(Detections.from_apply(post.apply(logits, regressions)))
                bar.update(task, advance=len(chunk))
        described = runner.describe() if hasattr(runner, "describe") else None
    finally:
        if hasattr(runner, "close"):
            runner.close()
    detections = Detections.concat(found)
    scores = coco_scores(truth, image_results(images, detections, resolution, columns))
    row = {"model": name, "images": len(images), "map": scores["map"], "ap50": scores["ap50"], "ap75": scores["ap75"]}
    details = {"task": "detect", "category_ids": columns, "per_class": {"artifact": known(scores["per_class"])},
               "post_processing": meta["post_processing"], "resolution": resolution}
    if ref_model is not None:
        reference = Detections.concat(ref_found)
        ref_scores = coco_scores(truth, image_results(images, reference, resolution, columns))
        agreement = box_agreement(reference, detections)
        row.update(reference_map=ref_scores["map"], reference_ap50=ref_scores["ap50"], reference_ap75=ref_scores["ap75"],
                   map_drop_points=(ref_scores["map"] - scores["map"]) * 100, boxes_found_again=agreement["matched"],
                   reference_boxes=agreement["reference_boxes"], matched_iou_mean=agreement["matched_iou_mean"],
                   map_vs_reference=agreement["map_vs_reference"])
        details["per_class"]["reference"] = known(ref_scores["per_class"])
        details["box_agreement"] = agreement
        if agreement.get("note"):
            notes.append(agreement["note"])
    row.update(postprocess_ms=median_ms(post_ns), runtime_ms=median_ms(runtime_ns), **device.marks)
    details["timing"] = {
        "runtime_ms_per_image": [v / 1e6 for v in runtime_ns], "postprocess_ms_per_image": [v / 1e6 for v in post_ns],
        "measured": "one image per runtime call (after one untimed warm-up), then PostProcess.apply on its raw output, "
                    "time.perf_counter_ns; medians in the row",
    }
    if device.round_trip_note:
        notes.append(device.round_trip_note)
    if not meta.get("heads_trained", True):
        from edgeeff.detect import UNTRAINED_NOTE

        notes.append(UNTRAINED_NOTE)
    details["notes"] = notes
    from edgeeff.devices.cpu import recipe_note

    profile = device.cpu_profile()
    row.update(cpu_profile=profile.name if profile else None, converted_for=(meta.get("cpu_profile") or {}).get("name"))
    note = recipe_note(meta, profile)
    if note:
        row["note"] = note
    return DetectEvalResult(row, details, source, meta, described)
