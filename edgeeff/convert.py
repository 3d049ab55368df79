"""``edgeeff convert``: build, calibrate, export, validate, and publish an artifact atomically.

Everything is staged in a hidden folder beside the destination and renamed into place only after
validation passed, so an interrupted, failed or invalid conversion leaves nothing that looks done.
Converting the same inputs again reuses the artifact (its content key is in ``edgeeff.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgeeff import __version__, fsio
from edgeeff.fsio import sha256_of
from edgeeff.data.images import Sample, bundled_photos, list_samples
from edgeeff.errors import EdgeeffError, ValidationError
from edgeeff.evaluate import compare_logits, top_k
from edgeeff.devices.cpu import CpuProfile
from edgeeff.quant.recipes import recipe_for
from edgeeff.targets.base import TargetSpec, check_options, get_target, load_runner
from edgeeff.weights.loaders import weights_file

Progress = Callable[[str, Optional[int], Optional[int]], None]

# Artifacts end at the logits (no softmax in the graph): the top-1 is the same, an int8 softmax would
# round every probability under 1/256 to zero (ties at the top, meaningless tails), and logits keep
# validation meaningful even for a network whose softmax is near uniform (random weights).
OUTPUT = "logits"
FP32_TOLERANCE = 1e-4  # max |logit - logit_keras| relative to max |logit_keras|
FP16_TOLERANCE = 1e-2
MIN_AGREEMENT = 0.9  # quantized: top-1 agreement with Keras on the validation images...
AGREEMENT_GATE_MIN_IMAGES = 50  # ...gated only from this many images: below it one near-tie is 10+ points
# Quantized: mean cosine similarity of the logit vectors (always gated). Set to refuse broken
# artifacts, not healthy ones, on the few embedded photos a first conversion validates on
# (benchmarks/results/int8_recipes_vnni.md, Lite0): healthy artifacts measured 0.94-0.99 there (onnx
# u8s8-reduced calibrated on the shared sample: 0.94, which 0.95 refused), an OpenVINO one calibrated
# on noise 0.56. TFLite and onnx artifacts calibrated on noise (15 points of top-1 lost on held-out
# photos) still score 0.97 on those 13 photos: no threshold there tells them from healthy ones, so
# only --images (50+ labelled photos: the agreement gate) judges accuracy.
MIN_COSINE = 0.90


def _content_key(row: dict, weights_label: str, weights_sha: str, spec: TargetSpec, options: dict, calib: dict | None) -> str:
    from edgeeff.targets.base import versions

    payload = {
        "variant": row,
        "weights": [weights_label, weights_sha],
        "target": spec.name,
        "options": options,
        "calibration": [f["sha256"] for f in calib["files"]] + [calib["seed"], calib["preprocessing"], calib["views_per_image"]]
        if calib else None,
        "edgeeff": __version__,
        "versions": versions(*spec.packages),
    }
    if spec.graph_revision is not None:  # only targets that ever changed their graph: other artifacts keep their keys
        payload["graph_revision"] = spec.graph_revision
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


# Without --images, a --calibration folder's photos that calibration did not use validate the artifact:
# up to this many, a seeded choice. 100 of them put the agreement gate to work (50+ images), where the
# three embedded photos could only check the logits' cosine, which healthy and noise-calibrated
# artifacts pass alike (benchmarks/results/validation_spare.md).
SPARE_VALIDATION = 100


def validation_samples(images: str | Path | None, calibration_samples: Sequence[Sample] = (),
                       calibration_source: str | Path | None = None, seed: int = 0) -> tuple[list[Sample], str]:
    """Validation images and where they came from: the given set; else up to ``SPARE_VALIDATION``
    photos of the calibration folder that calibration did not use, when there are enough to gate
    agreement on; else the embedded photos not used for calibration."""
    if images is not None:
        return list_samples(images), str(images)
    used = {s.path.resolve() for s in calibration_samples}
    if calibration_source is not None:
        import random

        spare = [s for s in list_samples(calibration_source) if s.path.resolve() not in used]
        if len(spare) >= AGREEMENT_GATE_MIN_IMAGES:
            random.Random(seed + 1).shuffle(spare)
            chosen = sorted(spare[:SPARE_VALIDATION], key=lambda s: str(s.path))
            return chosen, f"{len(chosen)} photos of {calibration_source} that calibration did not use"
    names = {p.name for p in used}
    rest = [Sample(p, None) for p in bundled_photos() if p.name not in names]
    return rest or [Sample(p, None) for p in bundled_photos()], "embedded photos"


# The last validation set's decoded batches and Keras logits, by what determines them. A budget
# search or sensitivity table converts the same (variant, weights) dozens of times against the same
# images; recomputing the fp32 reference each time was most of a trial (Lite2 at 260 px: ~20 s of
# Keras per 400 images). One entry: the memory is one set of decoded images.
_REFERENCE: dict[tuple, list[tuple[np.ndarray, np.ndarray, list]]] = {}


def _reference_batches(model, samples: Sequence[Sample], resolution: int, card, key: tuple | None):
    """(images, Keras logits, labels) per batch, from the cache when ``key`` matches the last set."""
    from edgeeff.evaluate import batches

    if key is not None and key in _REFERENCE:
        return _REFERENCE[key]
    out = []
    for good, batch, _bad in batches(list(samples), resolution, card, batch=16):
        if batch is not None:
            out.append((batch, np.asarray(model.predict(batch, verbose=0)), [s.label for s in good]))
    if key is not None:
        _REFERENCE.clear()
        _REFERENCE[key] = out
    return out


def validate(runner, model, spec: TargetSpec, samples: Sequence[Sample], resolution: int, card, limit: int = 1000,
             trained: bool = True, reference_key: tuple | None = None) -> dict:
    """Compare the artifact with the Keras model on real images; returns figures and failures.

    Labelled images also give both models' top-1/top-5, scored on the same images. Agreement is
    gated only for trained weights: a randomly initialised network's top-1 is a near-tie on every
    image (measured: V2-B0 tflite-int8 at 74.5% agreement with a logit cosine of 0.991), so for it the
    output difference (cosine) is the check. ``reference_key`` names what fixes the Keras side
    (variant, weights, preprocessing, images) so repeated conversions reuse it.
    """
    ref, out, labels = [], [], []
    samples = list(samples)[:limit]
    key = None if reference_key is None else (*reference_key, resolution, tuple(str(s.path) for s in samples))
    for batch, logits, batch_labels in _reference_batches(model, samples, resolution, card, key):
        ref.append(logits)
        out.append(np.concatenate([runner.predict(batch[i : i + 1]) for i in range(len(batch))]))
        labels += batch_labels
    if not ref:
        raise EdgeeffError("no readable validation images")
    ref_all, out_all = np.concatenate(ref), np.concatenate(out)
    figures = compare_logits(ref_all, out_all)
    agreement, cos, rel = figures["top1_agreement"], figures["mean_cosine"], figures["max_rel_diff"]
    if all(label is not None for label in labels):
        y = np.asarray(labels)
        for name, scores in (("keras", ref_all), ("artifact", out_all)):
            top5 = top_k(scores)
            figures[f"top1_{name}"] = float((top5[:, 0] == y).mean())
            figures[f"top5_{name}"] = float((top5 == y[:, None]).any(1).mean())
        from edgeeff.evaluate import paired_drop

        # The drop on the same images with its paired 95 % interval: on a few hundred images a
        # drop of a few tenths is one or two photos, and the interval says how much that means.
        figures["top1_drop_paired"] = paired_drop(top_k(ref_all, 1)[:, 0] == y, top_k(out_all, 1)[:, 0] == y)
    failures = []
    tolerance = {"fp32": FP32_TOLERANCE, "fp16": FP16_TOLERANCE}.get(spec.precision)
    if tolerance is not None and rel > tolerance:
        failures.append(f"max |logit - logit_keras| / max |logit_keras| = {rel:.2e} > {tolerance:g}")
    if spec.quantized and trained and len(ref_all) >= AGREEMENT_GATE_MIN_IMAGES and agreement < MIN_AGREEMENT:
        failures.append(f"top-1 agreement {agreement:.3f} < {MIN_AGREEMENT}")
    if spec.quantized and cos < MIN_COSINE:
        failures.append(f"mean cosine of logits {cos:.3f} < {MIN_COSINE}")
    if spec.quantized and (len(ref_all) < AGREEMENT_GATE_MIN_IMAGES or not trained):
        figures["notes"] = [f"validated on {len(ref_all)} photos: enough to refuse a broken artifact, not to judge accuracy; "
                            f"give --images with {AGREEMENT_GATE_MIN_IMAGES}+ labelled photos for that"]
    figures["tolerance"] = tolerance
    figures["compared"] = "logits (relative max abs difference; cosine of logit vectors)"
    figures["failures"] = failures
    return figures


@dataclass
class Subject:
    """What one conversion exports and what it is checked against: built once per kind of model
    (:func:`classifier_subject` here, :func:`edgeeff.detect.detector_subject` for detectors), so
    the staging, calibration, content key and publishing below serve both."""

    name: str  # the metadata's "variant" and the artifact folder's stem
    row: dict  # the architecture's row (part of the content key)
    export_model: object  # the Keras graph handed to the exporter
    resolution: int
    card: object  # PreprocessCard: geometry of calibration and validation images
    weights_label: str
    weights_sha: str
    weights_card: dict | None
    output: str  # what the artifact's one output holds
    validate: Callable  # (runner, spec, samples) -> figures with "failures"
    metadata: dict = field(default_factory=dict)  # kind-specific keys of edgeeff.json (task, post-processing)


def classifier_subject(variant: str, weights: str | None, say: Progress) -> Subject:
    """A classifier variant with its weights (``None``: the variant's real ones; ``"none"``: random)."""
    from edgeeff.api import build
    from edgeeff.model.variants import resolve

    v = resolve(variant)
    if weights is None:  # the variant's real weights, as on the command line; random ones only as "none"
        from edgeeff.weights.cards import default_weights_name

        weights = default_weights_name(v)
    say(f"building {v.name}")
    model = build(v, weights=weights, classifier_activation=None)
    choice = model.edgeeff_weights
    card = choice.preprocessing
    if choice.path is not None:  # a file, or a training run directory's weights file: retraining changes the key
        weights_sha = sha256_of(weights_file(Path(choice.path)))
    else:
        weights_sha = (choice.card.sha256 or choice.card.file_hash) if choice.card else ""
    # random initial weights are seeded by build(), so they too are fixed by the label
    reference_key = (v.name, choice.label, weights_sha, json.dumps(card.to_dict(), sort_keys=True))

    def check(runner, spec, samples):
        return validate(runner, model, spec, samples, v.resolution, card, trained=choice.label != "none", reference_key=reference_key)

    return Subject(v.name, asdict(v), model, v.resolution, card, choice.label, weights_sha,
                   choice.card.to_dict() if choice.card else None, OUTPUT, check)


def subject_kind(variant: str) -> Callable[[str, str | None, Progress], Subject]:
    """The subject builder for a model name: detectors by their full name (``efficientdet-lite0``),
    every other name a classifier variant."""
    from edgeeff.model.detectors import is_detector

    if is_detector(variant):
        from edgeeff.detect import detector_subject

        return detector_subject
    return classifier_subject


def convert(
    variant: str,
    target: str,
    weights: str | None = None,
    out: str | Path | None = None,
    calibration: str | Path | None = None,
    calibration_count: int | None = None,
    calibration_views: int | None = None,
    seed: int = 0,
    images: str | Path | None = None,
    force: bool = False,
    options: dict | None = None,
    progress: Progress | None = None,
    require_valid: bool = True,
    cpu: CpuProfile | str | None = None,
) -> dict:
    """Convert one (variant, weights, target); returns the metadata written to ``edgeeff.json``.

    ``weights`` None means the variant's real weights (or a refusal where it has none); random
    weights only when asked for with ``"none"``.

    ``progress(step, done, total)`` is told each step; long steps (decoding and calibration) also
    report ``done`` of ``total`` images, so a caller can draw a bar. ``require_valid=False`` (the CI
    gate, which judges by its own rules) publishes an artifact whose validation failed, with the
    failures in its metadata, instead of raising. ``cpu``: the CPU profile the artifact is for (a
    name or :class:`edgeeff.devices.cpu.CpuProfile`; default this machine's), which picks the int8 recipe
    (``edgeeff.quant.recipes``) for every option the caller leaves unset.
    """
    say = progress or (lambda _step, _done=None, _total=None: None)
    spec = get_target(target)
    options = dict(options or {})
    check_options(spec, options)
    profile = cpu_profile(cpu)
    recipe = recipe_for(spec.name, profile)
    if recipe is not None:
        options = {**recipe.options, **options}  # the user's own settings win over the recipe's
    if calibration is not None and not spec.needs_calibration:
        raise EdgeeffError(f"--calibration does not apply to {spec.name}: it needs no calibration")
    spec.require()
    prepare = subject_kind(variant)
    eval_samples = list_samples(images) if images is not None else []
    out_root = Path(out) if out is not None else Path("edgeeff-out")
    check_writable(out_root)  # before minutes of work, not after

    subject = prepare(variant, weights, say)
    dest = out_root / f"{subject.name.replace(':', '_').replace('=', '').replace(',', '_')}-{spec.name}"
    card, resolution = subject.card, subject.resolution

    calib = None
    calib_manifest = None
    if spec.needs_calibration:
        from edgeeff.calibration import from_images, from_samples
        from edgeeff.calibration.source import DEFAULT_COUNT, EMBEDDED_ORIGIN

        default_count = recipe.calibration_count if recipe is not None else DEFAULT_COUNT

        if calibration is None and images is None:
            # Embedded default: the bundled photos, split so validation never sees a calibration image.
            from edgeeff.data.images import embedded_split

            calib_part, eval_samples = embedded_split()
            calib = from_samples(calib_part, EMBEDDED_ORIGIN, resolution, card, calibration_count, seed, exclude=eval_samples,
                                 views=calibration_views, default_count=default_count)
        else:
            calib = from_images(calibration, resolution, card, calibration_count, seed, exclude=eval_samples,
                                views=calibration_views, default_count=default_count)
        calib.arrays(progress=lambda done, total: say("decoding calibration images", done, total))
        calib_manifest = calib.manifest()

    key = _content_key(subject.row, subject.weights_label, subject.weights_sha, spec, options, calib_manifest)
    meta_path = dest / "edgeeff.json"
    if meta_path.is_file() and not force:
        try:
            existing = json.loads(meta_path.read_text())
            if existing.get("content_key") == key and (dest / existing.get("artifact", "")).is_file():
                existing["reused"] = True
                existing["path"] = str(dest)
                return existing
        except ValueError:
            pass

    module = spec.module()
    staging = fsio.make_staging_dir(f".{dest.name}.", ".staging", out_root)
    try:
        start = time.perf_counter()
        saved_model = None
        if spec.needs_saved_model:
            say("exporting SavedModel")
            saved_model = staging / "saved_model"
            export_saved_model(subject.export_model, saved_model)
        artifact = staging / f"model{spec.suffix}"
        say(f"converting to {spec.name}")
        details = module.export(subject.export_model, spec, artifact, calib, options, saved_model=saved_model,
                                progress=lambda done, total: say("calibrating", done, total))
        wall = time.perf_counter() - start
        if saved_model is not None:
            shutil.rmtree(saved_model, ignore_errors=True)
        say("validating against Keras")
        # An accelerator's artifact (Edge TPU) is validated through its CPU twin, the same int8 model
        # before compilation; the compiled file is checked on the device (`edgeeff eval --device`).
        runner = load_runner(spec, staging / details.get("cpu_twin", artifact.name), threads=None)
        vsamples, validated_on = (eval_samples, str(images)) if eval_samples else validation_samples(
            None, calib.samples if calib else (), calibration, seed)
        figures = subject.validate(runner, spec, vsamples)
        figures["validated_on"] = validated_on
        leaked = details.get("unexpected_float_ops") if spec.precision == "int8" else None
        if leaked:
            figures["failures"].append(f"{len(leaked)} op(s) left in float: {', '.join(leaked[:3])}")
        files = sorted(p for p in staging.iterdir() if p.is_file())
        meta = {
            "content_key": key,
            "variant": subject.name,
            "variant_row": subject.row,
            **subject.metadata,
            "weights": {"label": subject.weights_label, "sha256": subject.weights_sha, "card": subject.weights_card},
            "preprocessing": {"resolution": resolution, **card.to_dict(), "input": "RGB 0-255, NHWC"},
            "target": spec.name,
            "backend": spec.backend,
            "precision": spec.precision,
            "artifact": artifact.name,
            "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files},
            "size_bytes": sum(p.stat().st_size for p in files),
            "io": runner.describe(),
            "output": subject.output,
            "options": {k: v for k, v in options.items() if v is not None},
            "cpu_profile": {"name": profile.name, "int8_dot": profile.int8_dot, "description": profile.description},
            "recipe": recipe.to_dict() if recipe is not None else None,
            "conversion": details,
            "conversion_seconds": round(wall, 2),
            "calibration": calib_manifest,
            "validation": figures,
            "edgeeff": __version__,
        }
        if figures["failures"] and require_valid:
            hint = ("; try --calibration with a few hundred photos like the deployment's, or --images with 50+ of them to judge "
                    "by agreement" if spec.quantized else "")
            raise ValidationError(
                f"{spec.name} failed validation ({'; '.join(figures['failures'])}); nothing was published{hint}", figures["failures"]
            )
        fsio.write_text(staging / "edgeeff.json", json.dumps(meta, indent=2, default=str) + "\n")
        fsio.give_umask_mode(staging)  # exporters write some files through mkstemp too (0600)
        publish(staging, dest)
        meta["path"] = str(dest)
        return meta
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def cpu_profile(cpu) -> CpuProfile:
    """The CPU profile an artifact is converted for: given, named, or this machine's."""
    from edgeeff.devices.cpu import local_profile, named

    if isinstance(cpu, CpuProfile):
        return cpu
    return named(cpu) if cpu else local_profile()


def check_writable(out_root: Path) -> None:
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fsio.OutputError(f"cannot create output folder {out_root}: {exc.strerror}") from None
    if not os.access(out_root, os.W_OK):
        raise fsio.OutputError(f"output folder {out_root} is not writable; choose another with --out")


def export_saved_model(model, path: Path) -> None:
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(str(path), format="tf_saved_model", verbose=False)
    except TypeError:
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(str(path), format="tf_saved_model")


def publish(staging: Path, dest: Path) -> None:
    """Swap the staged folder into place; an old artifact is replaced only after the new one is whole."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        dest.rename(old)
    staging.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
