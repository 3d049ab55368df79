"""Accuracy over any predict function: top-1/top-5 and, given a reference, agreement.

It knows nothing of backends: a "predict" is any callable from a float32 batch of 0-255 pixels to
class scores, so the Keras model and every converted artifact are scored by the same code.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np

from edgeeff.data import Sample
from edgeeff.errors import ImageError
from edgeeff.preprocess import PreprocessCard, load_image

Predict = Callable[[np.ndarray], np.ndarray]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def batches(
    samples: Sequence[Sample], resolution: int, card: PreprocessCard, batch: int = 32, workers: int = 4
) -> Iterator[tuple[list[Sample], np.ndarray, list[tuple[Sample, str]]]]:
    """Decode in parallel, one batch at a time (bounded memory); unreadable files are reported, not fatal."""

    def load(sample: Sample):
        try:
            return sample, load_image(sample.path, resolution, card), None
        except ImageError as exc:
            return sample, None, str(exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(samples), batch):
            chunk = list(pool.map(load, samples[start : start + batch]))
            good = [(s, a) for s, a, e in chunk if a is not None]
            bad = [(s, e) for s, a, e in chunk if a is None]
            yield [s for s, _ in good], (np.stack([a for _, a in good]) if good else None), bad


def topk_accuracy(
    predict: Predict,
    samples: Sequence[Sample],
    resolution: int,
    card: PreprocessCard,
    batch: int = 32,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Top-1/top-5 over labelled samples, with a 95 % Wilson interval for top-1."""
    labelled = [s for s in samples if s.label is not None]
    top1 = top5 = seen = 0
    skipped: list[tuple[str, str]] = []
    predictions: list[int] = []
    for chunk, images, bad in batches(labelled, resolution, card, batch):
        skipped += [(str(s.path), e) for s, e in bad]
        if images is not None:
            scores = np.asarray(predict(images))
            order = np.argsort(-scores, axis=1)[:, :5]
            labels = np.array([s.label for s in chunk])
            top1 += int((order[:, 0] == labels).sum())
            top5 += int((order == labels[:, None]).any(axis=1).sum())
            seen += len(chunk)
            predictions += order[:, 0].tolist()
        if progress:
            progress(len(chunk) + len(bad))
    low, high = wilson_interval(top1, seen)
    return {
        "images": seen,
        "unlabelled": len(samples) - len(labelled),
        "unreadable": len(skipped),
        "top1": top1 / seen if seen else None,
        "top5": top5 / seen if seen else None,
        "top1_ci95": [low, high],
        "predictions": predictions,
        "skipped": skipped,
    }
