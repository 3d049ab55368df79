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
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeeff import __version__, fsio
from edgeeff.fsio import sha256_of
from edgeeff.data import Sample, bundled_photos, list_samples
from edgeeff.errors import EdgeeffError, ValidationError
from edgeeff.targets.base import TargetSpec, check_options, get_target

FP32_TOLERANCE = 1e-4  # max abs difference of output probabilities vs Keras
FP16_TOLERANCE = 1e-2
MIN_AGREEMENT = 0.9  # quantized: top-1 agreement with Keras on the validation images...
AGREEMENT_GATE_MIN_IMAGES = 50  # ...gated only from this many images: below it one near-tie is 10+ points
MIN_COSINE = 0.95  # quantized: mean cosine similarity of the probability vectors (always gated)


def _content_key(variant, weights_label: str, weights_sha: str, spec: TargetSpec, options: dict, calib: dict | None) -> str:
    from edgeeff.targets.base import versions

    payload = {
        "variant": asdict(variant),
        "weights": [weights_label, weights_sha],
        "target": spec.name,
        "options": options,
        "calibration": [f["sha256"] for f in calib["files"]] + [calib["seed"], calib["preprocessing"]] if calib else None,
        "edgeeff": __version__,
        "versions": versions(*spec.packages),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def validation_samples(images: str | Path | None, calibration_samples: Sequence[Sample] = ()) -> list[Sample]:
    """Validation images: the given set, else the embedded photos not used for calibration."""
    if images is not None:
        return list_samples(images)
    used = {s.path.name for s in calibration_samples}
    rest = [Sample(p, None) for p in bundled_photos() if p.name not in used]
    return rest or [Sample(p, None) for p in bundled_photos()]


def validate(runner, model, spec: TargetSpec, samples: Sequence[Sample], resolution: int, card, limit: int = 200) -> dict:
    """Compare the artifact with the Keras model on real images; returns figures and failures."""
    from edgeeff.evaluate import batches

    ref, out = [], []
    for _, batch, _bad in batches(list(samples)[:limit], resolution, card, batch=16):
        if batch is None:
            continue
        ref.append(np.asarray(model.predict(batch, verbose=0)))
        out.append(np.concatenate([runner.predict(batch[i : i + 1]) for i in range(len(batch))]))
    if not ref:
        raise EdgeeffError("no readable validation images")
    ref_all, out_all = np.concatenate(ref), np.concatenate(out)
    agreement = float((ref_all.argmax(1) == out_all.argmax(1)).mean())
    cos = float(np.mean(np.sum(ref_all * out_all, 1) / (np.linalg.norm(ref_all, axis=1) * np.linalg.norm(out_all, axis=1) + 1e-12)))
    max_diff = float(np.abs(ref_all - out_all).max())
    figures = {"images": len(ref_all), "top1_agreement": agreement, "mean_cosine": cos, "max_abs_diff": max_diff}
    failures = []
    if spec.precision == "fp32" and max_diff > FP32_TOLERANCE:
        failures.append(f"max |p - p_keras| = {max_diff:.2e} > {FP32_TOLERANCE:g}")
    if spec.precision == "fp16" and max_diff > FP16_TOLERANCE:
        failures.append(f"max |p - p_keras| = {max_diff:.2e} > {FP16_TOLERANCE:g}")
    if spec.quantized and len(ref_all) >= AGREEMENT_GATE_MIN_IMAGES and agreement < MIN_AGREEMENT:
        failures.append(f"top-1 agreement {agreement:.3f} < {MIN_AGREEMENT}")
    if spec.quantized and cos < MIN_COSINE:
        failures.append(f"mean cosine {cos:.3f} < {MIN_COSINE}")
    figures["tolerance"] = {"fp32": FP32_TOLERANCE, "fp16": FP16_TOLERANCE}.get(spec.precision)
    figures["compared"] = "softmax probabilities"
    figures["failures"] = failures
    return figures


def convert(
    variant: str,
    target: str,
    weights: str | None = None,
    out: str | Path | None = None,
    calibration: str | Path | None = None,
    calibration_count: int | None = None,
    seed: int = 0,
    images: str | Path | None = None,
    force: bool = False,
    options: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Convert one (variant, weights, target); returns the metadata written to ``edgeeff.json``."""
    from edgeeff.api import build
    from edgeeff.variants import resolve

    say = progress or (lambda _msg: None)
    spec = get_target(target)
    options = dict(options or {})
    check_options(spec, options)
    if calibration is not None and not spec.needs_calibration:
        raise EdgeeffError(f"--calibration does not apply to {spec.name}: it needs no calibration")
    spec.require()
    v = resolve(variant)
    eval_samples = list_samples(images) if images is not None else []
    out_root = Path(out) if out is not None else Path("edgeeff-out")
    dest = out_root / f"{v.name.replace(':', '_').replace('=', '').replace(',', '_')}-{spec.name}"

    say(f"building {v.name}")
    model = build(v, weights=weights)
    choice = model.edgeeff_weights
    card = choice.preprocessing
    if choice.path is not None and Path(choice.path).is_file():
        weights_sha = sha256_of(choice.path)
    else:
        weights_sha = (choice.card.sha256 or choice.card.file_hash) if choice.card else ""

    calib = None
    calib_manifest = None
    if spec.needs_calibration:
        from edgeeff.calibration import from_images, from_samples
        from edgeeff.calibration.source import EMBEDDED_ORIGIN

        if calibration is None and images is None:
            # Embedded default: the bundled photos, split so validation never sees a calibration image.
            from edgeeff.data import split as split_samples

            calib_part, eval_samples = split_samples([Sample(p, None) for p in bundled_photos()], 0.7, seed)
            calib = from_samples(calib_part, EMBEDDED_ORIGIN, v.resolution, card, calibration_count, seed, exclude=eval_samples)
        else:
            calib = from_images(calibration, v.resolution, card, calibration_count, seed, exclude=eval_samples)
        say(f"decoding {len(calib.samples)} calibration images")
        calib_manifest = calib.manifest()

    key = _content_key(v, choice.label, weights_sha, spec, options, calib_manifest)
    meta_path = dest / "edgeeff.json"
    if meta_path.is_file() and not force:
        try:
            existing = json.loads(meta_path.read_text())
            if existing.get("content_key") == key:
                existing["reused"] = True
                return existing
        except ValueError:
            pass

    module = spec.module()
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fsio.OutputError(f"cannot create output folder {out_root}: {exc.strerror}") from None
    if not os.access(out_root, os.W_OK):
        raise fsio.OutputError(f"output folder {out_root} is not writable; choose another with --out")
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".staging", dir=out_root))
    try:
        start = time.perf_counter()
        saved_model = None
        if spec.backend in ("tflite", "openvino"):
            say("exporting SavedModel")
            saved_model = staging / "saved_model"
            _export_saved_model(model, saved_model)
        artifact = staging / f"model{spec.suffix}"
        say(f"converting to {spec.name}" + (" (calibrating)" if calib else ""))
        details = module.export(model, spec, artifact, calib, options, saved_model=saved_model)
        wall = time.perf_counter() - start
        if saved_model is not None:
            shutil.rmtree(saved_model, ignore_errors=True)
        say("validating against Keras")
        runner = module.load(artifact, spec, threads=None)
        vsamples = eval_samples or validation_samples(None, calib.samples if calib else ())
        figures = validate(runner, model, spec, vsamples, v.resolution, card)
        if spec.precision == "int8" and details.get("fully_integer") is False:
            figures["failures"].append(f"{len(details['float_ops'])} op(s) left in float: {', '.join(details['float_ops'][:3])}")
        files = sorted(p for p in staging.iterdir() if p.is_file())
        meta = {
            "content_key": key,
            "variant": v.name,
            "variant_row": asdict(v),
            "weights": {"label": choice.label, "sha256": weights_sha, "card": choice.card.to_dict() if choice.card else None},
            "preprocessing": {"resolution": v.resolution, **card.to_dict(), "input": "RGB 0-255, NHWC"},
            "target": spec.name,
            "backend": spec.backend,
            "precision": spec.precision,
            "artifact": artifact.name,
            "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files},
            "size_bytes": sum(p.stat().st_size for p in files),
            "io": runner.describe(),
            "options": {k: v for k, v in options.items() if v is not None},
            "conversion": details,
            "conversion_seconds": round(wall, 2),
            "calibration": calib_manifest,
            "validation": figures,
            "edgeeff": __version__,
        }
        if figures["failures"]:
            raise ValidationError(
                f"{spec.name} failed validation ({'; '.join(figures['failures'])}); nothing was published", figures["failures"]
            )
        fsio.write_text(staging / "edgeeff.json", json.dumps(meta, indent=2, default=str) + "\n")
        _publish(staging, dest)
        meta["path"] = str(dest)
        return meta
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _export_saved_model(model, path: Path) -> None:
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(str(path), format="tf_saved_model", verbose=False)
    except TypeError:
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(str(path), format="tf_saved_model")


def _publish(staging: Path, dest: Path) -> None:
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
