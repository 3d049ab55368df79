"""Detectors through ``edgeeff convert``: which weights, which graph, and validation by box agreement.

A detector artifact ends in one raw tensor (:data:`edgeeff.model.efficientdet.RAW_OUTPUT`: box
regressions then class logits per anchor), so every runner, the device kit and the boards run it as
they run a classifier; the post-processing (anchors, decoding, NMS) is the numpy reference
:class:`edgeeff.model.postprocess.PostProcess`, applied after the runtime and timed on its own.

Weights: no pretrained detector installs from the package registries, so ``--weights`` is an
``edgeeff train-detect`` run directory (its run card names the detector, input size and classes), a
weights file saved from the same detector, or nothing: then the backbone gets its variant's real
weights and the BiFPN and heads keep their seeded initialisation, which the metadata and the
validation say (an untrained head's scores all sit near the 0.01 prior: nothing to agree on).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeeff.data.images import Sample
from edgeeff.data.preprocess import PreprocessCard
from edgeeff.errors import EdgeeffError, WeightsError
from edgeeff.fsio import sha256_of
from edgeeff.model.detectors import Detector, at_size, get_detector

UNTRAINED_NOTE = ("heads untrained: no pretrained detector installs from the registries; train one with edgeeff train-detect "
                  "and convert it with --weights RUN_DIR")
# Validation of a quantized detector (benchmarks/results/detector_int8.md for healthy artifacts,
# detector_validation.md for healthy against broken ones): the class logits of every anchor, compared
# by cosine, refuse a broken artifact; with trained weights, from enough boxes to mean something, so do
# the share of the Keras model's confident boxes the artifact finds again (same class, IoU >= 0.5) and
# the artifact's mAP against those boxes. The last is the one that tells: artifacts calibrated on noise
# keep a logit cosine of 0.998 and find 73-96 % of the boxes again, but misplaced (mAP against Keras's
# boxes 4-24 %, healthy ones 87-92 %; their mAP on labels falls from 18.7 % to 1.4-6.5 %).
MIN_LOGIT_COSINE = 0.90
MIN_MATCHED = 0.70
MIN_MAP_VS_REFERENCE = 0.50
MATCH_GATE_MIN_BOXES = 30
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 2e-2


@dataclass(frozen=True)
class DetectorWeights:
    """What ``--weights`` resolved to for a detector."""

    label: str
    file: Path | None  # a Keras weights file of the whole detector
    sha256: str
    trained: bool  # heads trained (a run or a file), not only the backbone
    num_classes: int
    categories: tuple[dict, ...] | None  # COCO categories of a train-detect run, in logit-column order
    backbone: str | None  # the backbone weights loaded when the heads are untrained


def detection_card(row: Detector) -> PreprocessCard:
    """Calibration and validation images as the detector sees them: letterboxed, bilinear."""
    return PreprocessCard(mean=tuple(row.mean), std=tuple(row.std), crop_padding=0, interpolation="bilinear", fit="letterbox")


def choose_detector_weights(row: Detector, weights: str | Path | None) -> tuple[Detector, DetectorWeights]:
    """The row (at a run's input size) and the weights for ``--weights`` (see the module docstring)."""
    from edgeeff.api import RUN_CARD
    from edgeeff.weights.cards import default_weights_name
    from edgeeff.model.variants import VARIANTS

    text = "" if weights is None else str(weights).strip()
    if text.lower() in ("", "auto"):
        backbone = default_weights_name(VARIANTS[row.backbone])
        return row, DetectorWeights(f"backbone {backbone}; heads untrained", None, "", False, row.num_classes, None, backbone)
    if text.lower() in ("none", "random"):
        return row, DetectorWeights("none", None, "", False, row.num_classes, None, None)
    path = Path(text).expanduser()
    if path.is_dir():
        card_path = path / RUN_CARD
        if not card_path.is_file():
            raise WeightsError(f"{path} has no {RUN_CARD}: pass an edgeeff train-detect run directory or a detector weights file")
        card = json.loads(card_path.read_text())
        if card.get("task") != "detect":
            raise WeightsError(f"{path} is a classifier's training run; a detector converts from an edgeeff train-detect run")
        if card["detector"] != row.name:
            raise WeightsError(f"{path} trained {card['detector']}, not {row.name}; use --variant {card['detector']}")
        file = path / card["weights"]
        if not file.is_file():
            raise WeightsError(f"{path} has no final weights ({card['weights']}): finish the run (edgeeff train-detect --resume)")
        categories = tuple(card.get("categories") or ())
        return at_size(row, card.get("image_size")), DetectorWeights(
            str(path), file, sha256_of(file), True, int(card["num_classes"]), categories or None, None)
    if path.is_file():
        return row, DetectorWeights(str(path), path, sha256_of(path), True, row.num_classes, None, None)
    raise WeightsError(f"detector weights {text!r} not found: give an edgeeff train-detect run directory, a weights file, "
                       "'none', or nothing (backbone weights, untrained heads)")


def backbone_layers(model, image_size: int) -> list:
    """The detector's backbone layers: everything upstream of its C3-C5 endpoints (found as the builder
    finds them), so freezing needs no list of names."""
    import keras

    from edgeeff.model.efficientdet import backbone_endpoints

    ends = backbone_endpoints(model, image_size)
    sub = keras.Model(model.inputs, [model.get_layer(name).output for name in ends.values()])
    return [layer for layer in sub.layers if layer.weights]


def load_backbone(model, row, weights: str) -> str:
    """Copy the backbone variant's classifier weights (``weights``: a card name, ``imagenet``, a file,
    or ``auto`` for the variant's default) into the detector's backbone by layer name; returns what
    was loaded. Every backbone layer must be filled: a half-initialised backbone trains into nonsense."""
    from edgeeff.api import build, choose_weights
    from edgeeff.model.variants import VARIANTS
    from edgeeff.weights.cards import default_weights_name
    from edgeeff.weights.loaders import weights_of_model

    variant = VARIANTS[row.backbone]
    name = default_weights_name(variant) if weights == "auto" else weights
    choice = choose_weights(variant, name)
    pre = choice.preprocessing
    if tuple(pre.mean) != tuple(row.mean) or tuple(pre.std) != tuple(row.std):
        raise WeightsError(f"weights {choice.label} expect mean {pre.mean} / std {pre.std}, {row.name} normalises with "
                           f"{row.mean} / {row.std}; pick weights made for this backbone or --weights none")
    table = weights_of_model(build(variant, weights=name, classifier_activation=None))
    for layer in backbone_layers(model, row.image_size):
        arrays = table.get(layer.name)
        if arrays is None or [a.shape for a in arrays] != [tuple(w.shape) for w in layer.weights]:
            raise WeightsError(f"weights {choice.label} do not fit backbone layer {layer.name} of {row.name}")
        layer.set_weights(arrays)
    return choice.label


def build_reference(row: Detector, chosen: DetectorWeights, seed: int = 0):
    """The Keras detector (two outputs) with the chosen weights; the heads' initialisation is seeded,
    so an untrained detector is rebuilt identically for validation and for later comparisons."""
    import keras

    from edgeeff.model.efficientdet import build_detector

    keras.utils.set_random_seed(seed)
    model = build_detector(row, num_classes=chosen.num_classes, weights=str(chosen.file) if chosen.file else None)
    if chosen.backbone is not None:
        load_backbone(model, row, chosen.backbone)
    return model


def post_processing(row: Detector):
    """The post-processing every detector artifact's raw output goes through (hard NMS, 100 boxes)."""
    from edgeeff.model.postprocess import PostProcess

    return PostProcess.for_detector(row)


def detector_subject(variant: str, weights: str | None, say):
    """The :class:`edgeeff.convert.Subject` for a detector name and ``--weights``."""
    from edgeeff.convert import Subject
    from edgeeff.model.efficientdet import RAW_OUTPUT, raw_output_model

    row, chosen = choose_detector_weights(get_detector(variant), weights)
    say(f"building {row.name} at {row.image_size} px")
    model = build_reference(row, chosen)
    export_model = raw_output_model(model)
    card = detection_card(row)
    post = post_processing(row)
    if not chosen.trained:
        say(UNTRAINED_NOTE)

    def check(runner, spec, samples):
        return validate_detector(runner, export_model, spec, samples, row, card, chosen.trained)

    metadata = {
        "task": "detect",
        "post_processing": {**asdict(post), "runs": "after the runtime (edgeeff.model.postprocess.PostProcess, numpy)"},
        "raw_output": {"layout": "(N, anchors, 4 + classes): box regressions (ty, tx, th, tw), then class logits",
                       "anchors": int(len(post.anchors())), "classes": chosen.num_classes},
        "categories": list(chosen.categories) if chosen.categories else None,
        "heads_trained": chosen.trained,
    }
    return Subject(row.name, asdict(row), export_model, row.image_size, card, chosen.label, chosen.sha256, None, RAW_OUTPUT,
                   check, metadata)


def require_trained(variant: str, weights: str | None) -> None:
    """Per-block sensitivity and the budget rank a detector by box agreement, which untrained heads
    cannot give (every score sits near the prior): said before the first conversion."""
    _row, chosen = choose_detector_weights(get_detector(variant), weights)
    if not chosen.trained:
        raise EdgeeffError(f"{variant}: per-block sensitivity and the float-fallback budget rank a detector by its boxes, which "
                           "untrained heads do not give; pass --weights with an edgeeff train-detect run directory")


def trial_figures(validation: dict) -> dict:
    """A detector trial's scores as sensitivity and the budget read them (the classifier's are
    top-1 agreement, logit cosine and SNR): ``agreement`` is the artifact's mAP against the Keras
    detector's own confident boxes (0-1; the figure that told broken artifacts apart,
    ``MIN_MAP_VS_REFERENCE``), ``cosine`` the class logits', ``snr_db`` the raw output's. With fewer
    confident Keras boxes than validation gates on there is nothing to rank by (images unlike the
    training set's)."""
    boxes = validation["boxes"]
    if boxes.get("map_vs_reference") is None or boxes["reference_boxes"] < MATCH_GATE_MIN_BOXES:
        raise EdgeeffError(f"the Keras detector found {boxes['reference_boxes']} confident boxes on these images, fewer than the "
                           f"{MATCH_GATE_MIN_BOXES} an mAP against them needs to rank or budget blocks; give --images like its "
                           "training set's")
    return {"agreement": boxes["map_vs_reference"], "cosine": validation["class_logit_cosine"],
            "snr_db": validation.get("snr_db"), "images": validation["images"], "matched": boxes["matched"],
            "reference_boxes": boxes["reference_boxes"]}


def raw_batches(model, samples: Sequence[Sample], resolution: int, card: PreprocessCard, batch: int = 8):
    """(images, Keras raw outputs) per batch of readable samples."""
    from edgeeff.evaluate import batches

    for _good, images, _bad in batches(list(samples), resolution, card, batch=batch):
        if images is not None:
            yield images, np.asarray(model.predict(images, verbose=0))


def validate_detector(runner, export_model, spec, samples: Sequence[Sample], row: Detector, card: PreprocessCard,
                      trained: bool, limit: int = 200) -> dict:
    """Compare a detector artifact with the Keras detector on real images: raw outputs (relative
    difference, class-logit cosine) and, after the same post-processing, box agreement (the Keras
    model's confident boxes found again, their IoU and score difference, and the artifact's mAP
    against them)."""
    from edgeeff.detection_agreement import Detections, box_agreement, raw_output_figures
    from edgeeff.model.efficientdet import split_raw

    post = post_processing(row)
    ref, out = [], []
    for images, raw in raw_batches(export_model, list(samples)[:limit], row.image_size, card):
        ref.append(raw)
        out.append(np.concatenate([runner.predict(images[i : i + 1]) for i in range(len(images))]))
    if not ref:
        raise EdgeeffError("no readable validation images")
    ref_all, out_all = np.concatenate(ref), np.concatenate(out)
    figures = raw_output_figures(ref_all, out_all)
    detections = [Detections.from_apply(post.apply(*split_raw(raw))) for raw in (ref_all, out_all)]
    figures["boxes"] = box_agreement(*detections)
    failures = []
    tolerance = {"fp32": FP32_TOLERANCE, "fp16": FP16_TOLERANCE}.get(spec.precision)
    if tolerance is not None and figures["max_rel_diff"] > tolerance:
        failures.append(f"max |output - output_keras| / max |output_keras| = {figures['max_rel_diff']:.2e} > {tolerance:g}")
    if spec.quantized and figures["class_logit_cosine"] < MIN_LOGIT_COSINE:
        failures.append(f"mean cosine of class logits {figures['class_logit_cosine']:.3f} < {MIN_LOGIT_COSINE}")
    boxes = figures["boxes"]
    boxes_gated = spec.quantized and trained and boxes["reference_boxes"] >= MATCH_GATE_MIN_BOXES
    if boxes_gated and boxes["matched"] < MIN_MATCHED:
        failures.append(f"{boxes['matched']:.1%} of the Keras detector's {boxes['reference_boxes']} confident boxes found again "
                        f"< {MIN_MATCHED:.0%}")
    if boxes_gated and boxes["map_vs_reference"] < MIN_MAP_VS_REFERENCE:
        failures.append(f"mAP against the Keras detector's own boxes {boxes['map_vs_reference']:.1%} < {MIN_MAP_VS_REFERENCE:.0%} "
                        "(boxes misplaced)")
    notes = []
    if not trained:
        notes.append(UNTRAINED_NOTE + "; validated on raw outputs only")
    elif boxes["reference_boxes"] < MATCH_GATE_MIN_BOXES:
        notes.append(f"{boxes['reference_boxes']} confident Keras boxes on {len(ref_all)} images: too few to gate box agreement; "
                     "give --images with photos like the training set's")
    if notes:
        figures["notes"] = notes
    figures["tolerance"] = tolerance
    figures["compared"] = "raw outputs (relative max abs difference; class-logit cosine) and boxes after the same post-processing"
    figures["failures"] = failures
    return figures
