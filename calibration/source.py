"""The calibration source: a seeded, reproducible choice of N real images, preprocessed by the card."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from edgeeff.data.images import Sample, bundled_photos, list_samples
from edgeeff.errors import EdgeeffError, ImageError
from edgeeff.fsio import sha256_of
from edgeeff.data.preprocess import PreprocessCard, crop_and_resize, load_rgb

# Calibration set sizes, chosen from benchmarks/results/calibration_sweep.md (Lite0, 290 held-out
# ImageNet photos): agreement with fp32 was flat from 16 to 210 images on all three backends (within
# +-3 images of 290), while conversion time grows with the count (TFLite 11 s at 16, 25 s at 210).
# DEFAULT_COUNT = 128 keeps a margin over the plateau for folders less homogeneous than ImageNet.
# Below MIN_COUNT a handful of pictures would set every range and we refuse; below WARN_BELOW we
# go on and say so (one unusual photo can then set a range).
MIN_COUNT = 4
WARN_BELOW = 50
DEFAULT_COUNT = 128

# Views of one photo: the whole photo, then squares of 60 % of its short side (centre, four
# corners), each also mirrored; every view then goes through the card's own crop and resize, so a
# view is an input the model could meet. A small set (below WARN_BELOW images) is calibrated on all
# twelve views of each image by default, because NNCF's statistics and bias correction need more
# samples than a handful of photos give. Measured (benchmarks/results/calibration_views.md; Lite0,
# 290 held-out ImageNet photos): openvino-int8 calibrated on 10 photos 90.3 % agreement, logit
# cosine 0.935; on their twelve views 96.2 %, 0.982. TFLite and onnxruntime moved by at most one
# image; at 64 photos the views changed nothing beyond two images. On the ten embedded photos,
# openvino-int8's cosine on the three embedded validation photos went from 0.931 (refused) to 0.986.
VIEWS = (
    (None, False), (None, True),
    ((0.5, 0.5), False), ((0.5, 0.5), True),
    ((0.0, 0.0), False), ((1.0, 0.0), False), ((0.0, 1.0), False), ((1.0, 1.0), False),
    ((0.0, 0.0), True), ((1.0, 0.0), True), ((0.0, 1.0), True), ((1.0, 1.0), True),
)
VIEW_CROP = 0.6
SMALL_SET_VIEWS = len(VIEWS)


def views_for(count: int, views: int | None) -> int:
    """Views per image: as asked, else all of them for a small set and one (the photo) otherwise."""
    if views is None:
        return SMALL_SET_VIEWS if count < WARN_BELOW else 1
    if not 1 <= views <= len(VIEWS):
        raise CalibrationError(f"--calibration-views must be 1-{len(VIEWS)}, got {views}")
    return views


def view_arrays(path: Path, resolution: int, card: PreprocessCard, views: int) -> list[np.ndarray]:
    """The first ``views`` views of one photo, each preprocessed by the card."""
    from PIL import ImageOps

    img = load_rgb(path)
    out = []
    for corner, mirror in VIEWS[:views]:
        part = img
        if corner is not None:
            width, height = img.size
            side = int(min(width, height) * VIEW_CROP)
            left, top = int((width - side) * corner[0]), int((height - side) * corner[1])
            part = img.crop((left, top, left + side, top + side))
        out.append(crop_and_resize(ImageOps.mirror(part) if mirror else part, resolution, card))
    return out


class CalibrationError(EdgeeffError):
    """Calibration data that cannot be used (too few images, overlap with evaluation data)."""


@dataclass
class CalibrationSource:
    """Re-iterable: every ``iter()`` yields the same float32 (1, H, W, 3) batches in the same order."""

    samples: list[Sample]
    resolution: int
    card: PreprocessCard
    seed: int
    origin: str
    views: int = 1
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _cache: list[np.ndarray] | None = None

    def arrays(self, progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """Decoded once, kept: calibration passes over the data several times (entropy, bias correction).
        ``views`` arrays per readable image, in image order."""
        if self._cache is None:
            good, arrays = [], []
            for done, sample in enumerate(self.samples, 1):
                if progress:
                    progress(done, len(self.samples))
                try:
                    arrays.extend(a[None] for a in view_arrays(sample.path, self.resolution, self.card, self.views))
                    good.append(sample)
                except ImageError as exc:
                    self.unreadable.append((str(sample.path), str(exc)))
            if not arrays:
                raise CalibrationError(f"none of the {len(self.samples)} calibration images in {self.origin} could be decoded")
            if len(good) < MIN_COUNT:
                raise CalibrationError(
                    f"only {len(good)} readable calibration image(s) in {self.origin}; at least {MIN_COUNT} are needed"
                )
            self.samples = good
            self._cache = arrays
        return self._cache

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.arrays())

    def __len__(self) -> int:
        return len(self.arrays())

    def manifest(self) -> dict:
        self.arrays()
        return {
            "origin": self.origin,
            "seed": self.seed,
            "count": len(self.samples),
            "views_per_image": self.views,
            "views": [{"crop": None if corner is None else [VIEW_CROP, *corner], "mirror": mirror} for corner, mirror in VIEWS[: self.views]],
            "unreadable": len(self.unreadable),
            "preprocessing": {"resolution": self.resolution, **self.card.to_dict()},
            "files": [{"name": s.path.name, "sha256": sha256_of(s.path)} for s in self.samples],
            "warnings": self.warnings,
        }


EMBEDDED_ORIGIN = "embedded default photos (edgeeff/data/assets/photos)"


def from_images(
    source: str | Path | None,
    resolution: int,
    card: PreprocessCard,
    count: int | None = None,
    seed: int = 0,
    exclude: Sequence[Sample] = (),
    views: int | None = None,
    default_count: int = DEFAULT_COUNT,
) -> CalibrationSource:
    """Choose ``count`` images from a folder or list file (``None``: the embedded photos)."""
    if source is None:
        return from_samples([Sample(p, None) for p in bundled_photos()], EMBEDDED_ORIGIN, resolution, card, count, seed, exclude,
                            views, default_count)
    return from_samples(list_samples(source), str(source), resolution, card, count, seed, exclude, views, default_count)


def from_samples(
    samples: Sequence[Sample],
    origin: str,
    resolution: int,
    card: PreprocessCard,
    count: int | None = None,
    seed: int = 0,
    exclude: Sequence[Sample] = (),
    views: int | None = None,
    default_count: int = DEFAULT_COUNT,
) -> CalibrationSource:
    """Choose ``count`` of ``samples`` (``None``: ``default_count``, the int8 recipe's): a seeded
    shuffle of the sorted list, so the same images, count and seed give the same choice anywhere.
    Images also in ``exclude`` (the evaluation set, compared by content hash) are refused with one
    line naming them. ``views`` per image: see :func:`views_for`.
    """
    if count is not None and count < MIN_COUNT:
        raise CalibrationError(f"--calibration-count {count} is too few; use at least {MIN_COUNT} (default {DEFAULT_COUNT})")
    if exclude:
        excluded = {sha256_of(s.path) for s in exclude if s.path.is_file()}
        shared = [s.path.name for s in samples if sha256_of(s.path) in excluded]
        if shared:
            names = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
            raise CalibrationError(f"calibration overlaps the evaluation images in {len(shared)} file(s): {names}")
    rng = random.Random(seed)
    order = list(samples)
    rng.shuffle(order)
    wanted = default_count if count is None else count
    chosen = sorted(order[:wanted], key=lambda s: str(s.path))
    if len(chosen) < MIN_COUNT:
        raise CalibrationError(f"{origin} has {len(chosen)} image(s); calibration needs at least {MIN_COUNT}")
    warnings = []
    per_image = views_for(len(chosen), views)
    if len(chosen) < WARN_BELOW:
        also = f", {per_image} views of each" if per_image > 1 else ""
        warnings.append(
            f"calibrating on {len(chosen)} images{also} (fewer than {WARN_BELOW} images); activation ranges may not cover real inputs"
        )
    if count is not None and count > len(samples):
        warnings.append(f"asked for {count} calibration images, {origin} has {len(samples)}")
    return CalibrationSource(chosen, resolution, card, seed, origin, views=per_image, warnings=warnings)
