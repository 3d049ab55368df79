"""``edgeeff calibrate-sweep``: int8 accuracy against calibration size and method, so users pick
both from evidence; and the check that calibration sees exactly what evaluation sees.

Each point is a real ``convert()`` (seeded choice of N calibration images, the backend's own
calibration method) validated against the Keras fp32 model on the evaluation images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgeeff.errors import EdgeeffError

def methods_for(target: str, asked: list[str] | None) -> list[str | None]:
    from edgeeff.targets.base import OPTIONS, get_target

    spec = get_target(target)
    if spec.precision != "int8":
        raise EdgeeffError(f"{target} is not calibrated (no int8 mode); choose an -int8 target")
    entry = (spec.sweep_option, OPTIONS[spec.sweep_option].choices) if spec.sweep_option else None
    if not asked:
        return list(entry[1]) if entry else [None]
    if entry is None:
        raise EdgeeffError(f"{target} has one calibration method (the converter's min/max); drop --methods")
    bad = [m for m in asked if m not in entry[1]]
    if bad:
        raise EdgeeffError(f"{target} has no calibration method {bad[0]!r}; it has {', '.join(entry[1])}")
    return asked


def preprocessing_check(variant: str, weights: str | None, samples: list, count: int = 8) -> dict:
    """Runs the fp32 model on the same images through the calibration pipeline and the evaluation
    pipeline; any difference means calibration saw other pixels than deployment will."""
    from edgeeff.api import build
    from edgeeff.calibration import from_samples
    from edgeeff.evaluate import batches

    model = build(variant, weights=weights, classifier_activation=None)
    card, resolution = model.edgeeff_weights.preprocessing, model.input_shape[1]
    # One view per image: view 0 is the photo itself; the other views are other inputs by design.
    source = from_samples(samples[:count], "preprocessing check", resolution, card, count, 0, views=1)
    calib = np.concatenate(source.arrays())  # in source.samples order (a seeded choice)
    evals = [batch for _good, batch, _bad in batches(source.samples, resolution, card, batch=len(source.samples)) if batch is not None]
    if not evals:
        raise EdgeeffError("no readable images for the preprocessing check")
    ref = np.asarray(model.predict(np.concatenate(evals), verbose=0))
    out = np.asarray(model.predict(calib, verbose=0))
    diff = float(np.abs(ref - out).max())
    return {"images": len(ref), "max_abs_logit_diff": diff, "pixels_max_abs_diff": float(np.abs(np.concatenate(evals) - calib).max()),
            "identical": diff == 0.0}


def sweep(variant: str, target: str, weights: str | None, calibration: str | Path, images: str | Path, counts: list[int],
          methods: list[str | None], seed: int, root: Path, say: Callable[..., None]) -> list[dict]:
    from edgeeff.convert import convert
    from edgeeff.quant.sensitivity import validation_figures
    from edgeeff.targets.base import get_target

    spec = get_target(target)
    option = spec.sweep_option
    rows = []
    total = len(counts) * len(methods)
    for method in methods:
        for count in counts:
            say(f"{target} {method or 'default'} with {count} images", len(rows), total)
            meta = convert(variant, target, weights=weights, out=root / f"{method}-{count}", calibration=calibration,
                           calibration_count=count, seed=seed, images=images, options={option: method} if method else {},
                           require_valid=False)
            rows.append({"target": target, "method": method or "default", "count": meta["calibration"]["count"],
                         "views": meta["calibration"].get("views_per_image", 1),
                         "top1": None, "top1_fp32": None, **validation_figures(meta), "convert_seconds": meta["conversion_seconds"]})
    return rows


def plot(rows: list[dict], path: str | Path, title: str) -> Path:
    from edgeeff import report

    fig, ax = report.new_axes((7, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["count"], r["agreement"] * 100) for r in rows if r["method"] == method)
        ax.plot(*zip(*points), marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("calibration images")
    ax.set_ylabel("top-1 agreement with fp32 (%)")
    return report.save_png(fig, ax, path, title)
