"""Accuracy over any predict function: top-1/top-5 and, given a reference, agreement.

It knows nothing of backends: a "predict" is any callable from a float32 batch of 0-255 pixels to
class scores, so the Keras model and every converted artifact are scored by the same code.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np

from edgeeff.data.images import Sample
from edgeeff.errors import ImageError
from edgeeff.data.preprocess import PreprocessCard, load_image

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
    result = score_pair(predict, None, labelled, resolution, card, batch, progress)
    return {
        "images": result["images"],
        "unlabelled": len(samples) - len(labelled),
        "unreadable": result["unreadable"],
        "top1": result.get("top1"),
        "top5": result.get("top5"),
        "top1_ci95": result.get("top1_ci95"),
        "predictions": result["predicted"],
        "skipped": result["skipped"],
    }


def top_k(scores: np.ndarray, k: int = 5) -> np.ndarray:
    """The k best classes per row, best first. The one top-1 rule of every scorer: quantized logits
    tie, and a tie at the top goes to the lowest class index (``argmax``'s rule; a stable sort keeps
    it), so top-1 accuracy, agreement and the paired drop of the same images always agree."""
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k]


def top1_ties(scores: np.ndarray) -> int:
    """Images whose two best scores are equal: their top-1 was decided by the tie rule."""
    scores = np.asarray(scores)
    if scores.shape[1] < 2:
        return 0
    best_two = -np.sort(-scores, axis=1)[:, :2]
    return int((best_two[:, 0] == best_two[:, 1]).sum())


def softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def logit_figures(ref: np.ndarray, out: np.ndarray) -> dict:
    """Per-image figures of logits against reference logits (both (N, classes)): top-1 agreement by
    :func:`top_k`'s tie rule, cosine of the logit vectors, KL divergence of the softmaxes, largest
    absolute difference, and whether the outputs are identical. The one comparison every scorer
    (conversion validation, ``eval``, ``eval --compare-local``, the benchmarks) aggregates."""
    ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    p, q = softmax(ref), softmax(out)
    return {
        "agree": top_k(out, 1)[:, 0] == top_k(ref, 1)[:, 0],
        "cosine": np.sum(ref * out, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1) + 1e-12),
        "kl": np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1),
        "max_abs_diff": np.abs(ref - out).max(axis=1),
        "max_abs_diff_probabilities": np.abs(p - q).max(axis=1),
        "identical": np.all(ref == out, axis=1),
        "ties": np.asarray([top1_ties(row[None]) for row in out], dtype=int),
    }


def compare_logits(ref: np.ndarray, out: np.ndarray) -> dict:
    """Aggregate figures of :func:`logit_figures` for a set of images (what validation records)."""
    ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    per = logit_figures(ref, out)
    noise = float(np.sum((ref - out) ** 2))
    max_diff = float(per["max_abs_diff"].max())
    return {
        "snr_db": float(10 * np.log10(float(np.sum(ref**2)) / noise)) if noise > 0 else float("inf"),
        "images": len(ref),
        "top1_agreement": float(per["agree"].mean()),
        "top1_ties": int(per["ties"].sum()),
        "identical_outputs": int(per["identical"].sum()),
        "mean_cosine": float(per["cosine"].mean()),
        "min_cosine": float(per["cosine"].min()),
        "mean_kl": float(per["kl"].mean()),
        "max_abs_diff": max_diff,
        "max_rel_diff": max_diff / max(float(np.abs(ref).max()), 1e-12),
        "max_abs_diff_probabilities": float(per["max_abs_diff_probabilities"].max()),
    }


def score_pair(
    predict: Predict,
    reference: Predict | None,
    samples: Sequence[Sample],
    resolution: int,
    card: PreprocessCard,
    batch: int = 32,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Score ``predict`` (and ``reference``, on the very same decoded images) image by image.

    Both return logits. Returns aggregate figures and per-image arrays (``correct``,
    ``reference_correct``, ``agree``) so callers can form paired statistics; only one batch of
    pixels is held at a time.
    """
    files: list[str] = []
    labels: list[int | None] = []
    top5_rows: list[np.ndarray] = []
    ref_top1: list[int] = []
    cosines: list[float] = []
    kls: list[float] = []
    skipped: list[tuple[str, str]] = []
    ties = 0
    for chunk, images, bad in batches(list(samples), resolution, card, batch):
        skipped += [(str(s.path), e) for s, e in bad]
        if images is not None:
            out = np.asarray(predict(images), dtype=np.float64)
            top5_rows.append(top_k(out))
            ties += top1_ties(out)
            files += [s.path.name for s in chunk]
            labels += [s.label for s in chunk]
            if reference is not None:
                ref = np.asarray(reference(images), dtype=np.float64)
                per = logit_figures(ref, out)
                ref_top1 += top_k(ref, 1)[:, 0].tolist()
                cosines += per["cosine"].tolist()
                kls += per["kl"].tolist()
        if progress:
            progress(len(chunk) + len(bad))
    n = len(files)
    if n == 0:
        from edgeeff.errors import EdgeeffError

        raise EdgeeffError(f"none of the {len(samples)} images could be decoded")
    top5 = np.concatenate(top5_rows)
    result: dict = {"images": n, "unreadable": len(skipped), "skipped": skipped, "files": files,
                    "predicted": top5[:, 0].tolist(), "top1_ties": ties}
    if all(label is not None for label in labels):
        y = np.asarray(labels)
        correct = top5[:, 0] == y
        result.update({
            "labels": y.tolist(),
            "correct": correct,
            "top1": float(correct.mean()),
            "top5": float((top5 == y[:, None]).any(1).mean()),
            "top1_ci95": list(wilson_interval(int(correct.sum()), n)),
        })
    if reference is not None:
        agree = top5[:, 0] == np.asarray(ref_top1)
        result.update({
            "reference_predicted": ref_top1,
            "agree": agree,
            "top1_agreement": float(agree.mean()),
            "mean_cosine": float(np.mean(cosines)),
            "mean_kl": float(np.mean(kls)),
            "disagreements": [{"file": f, "artifact": int(a), "reference": int(r)}
                              for f, a, r, ok in zip(files, top5[:, 0], ref_top1, agree) if not ok],
        })
        if "labels" in result:
            ref_correct = np.asarray(ref_top1) == np.asarray(labels)
            result["reference_correct"] = ref_correct
            result["reference_top1"] = float(ref_correct.mean())
    return result


def paired_drop(reference_correct: np.ndarray, correct: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Top-1 drop (reference minus artifact, in points) on the same images, with a 95 % paired
    bootstrap interval and McNemar's exact two-sided p-value on the discordant images.

    Seeded, so the same inputs give the same interval. ``smallest_step`` is one image in points:
    a drop below it cannot be measured on this set.
    """
    ref = np.asarray(reference_correct, dtype=bool)
    art = np.asarray(correct, dtype=bool)
    n = len(ref)
    diff = ref.astype(np.int8) - art.astype(np.int8)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    boots = diff[idx].mean(axis=1) * 100
    only_ref = int(((diff == 1)).sum())
    only_art = int(((diff == -1)).sum())
    k, m = min(only_ref, only_art), only_ref + only_art
    p = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m) if m else 1.0
    return {
        "drop_points": float(diff.mean() * 100),
        "ci95_points": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "only_reference_right": only_ref,
        "only_artifact_right": only_art,
        "mcnemar_p": p,
        "images": n,
        "smallest_step_points": 100.0 / n if n else None,
    }


class PairedOutputs:
    """Wraps a ``predict`` so that a second runner (the same artifact on this machine) answers the very
    same batches; :meth:`summary` then compares the two image by image. Used by ``eval --compare-local``
    to tell what a device's build of a runtime changes from this machine's, apart from the reference."""

    def __init__(self, predict: Predict, other: Predict) -> None:
        self.predict_first, self.other = predict, other
        self.first: list[np.ndarray] = []
        self.second: list[np.ndarray] = []

    def __call__(self, batch):
        out = np.asarray(self.predict_first(batch), dtype=np.float64)
        self.first.append(out)
        self.second.append(np.asarray(self.other(batch), dtype=np.float64))
        return out

    def summary(self, files: Sequence[str]) -> dict:
        """Top-1 agreement, identical outputs, cosine and largest difference, and the disagreeing images
        (``files`` in the order the batches were answered: ``score_pair``'s ``files``)."""
        a, b = np.concatenate(self.first), np.concatenate(self.second)
        figures = compare_logits(b, a)
        top_a, top_b = top_k(a, 1)[:, 0], top_k(b, 1)[:, 0]
        keep = ("images", "top1_agreement", "identical_outputs", "mean_cosine", "min_cosine", "max_abs_diff")
        return {**{key: figures[key] for key in keep},
                "disagreements": [{"file": f, "device": int(x), "local": int(y)} for f, x, y in zip(files, top_a, top_b) if x != y]}
