"""Rows for ``edgeeff models``' detector table: each detector's sizes, counted from its built model
and set beside the published figure.

All thirteen take over a minute to build on two cores, so counts are cached beside the classifiers'
(:func:`edgeeff.model.catalog.cache_dir`), keyed by the row and the source of every module that
shapes the graph: editing any of them recounts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from edgeeff import fsio
from edgeeff.model.catalog import cache_dir
from edgeeff.model.detectors import DETECTORS, PUBLISHED, Detector, get_detector


def _key(row: Detector) -> str:
    from edgeeff.model import builder, efficientdet, fusion

    sources = "".join(Path(m.__file__).read_text() for m in (builder, efficientdet, fusion))
    payload = json.dumps(asdict(row), sort_keys=True) + sources
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def detector_counts(row: Detector, use_cache: bool = True) -> dict:
    """Parameters (all, trainable) and multiply-adds of the detector with its default 90 classes."""
    path = cache_dir() / "counts" / f"{row.name}-{_key(row)}.json"
    cached = _load(path) if use_cache else None
    if cached is None:
        cached = _count(row)
        if use_cache:
            _store(path, cached)
    return cached


def _count(row: Detector) -> dict:
    import keras

    from edgeeff.model.efficientdet import build_detector
    from edgeeff.model.flops import count_macs, count_params

    model = build_detector(row)
    total, trainable = count_params(model)
    result = {"params": total, "trainable_params": trainable, "macs": count_macs(model)}
    keras.backend.clear_session()
    return result


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or damaged: count again


def _store(path: Path, counts: dict) -> None:
    try:
        fsio.write_text(path, json.dumps(counts))
    except fsio.OutputError:
        pass  # a read-only cache only costs time


def detector_rows(names: list[str] | None = None, progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per detector; ``params_vs_published`` is trainable parameters over the published count
    minus one (the paper counts trainable parameters)."""
    rows = []
    for name in names or list(DETECTORS):
        row = get_detector(name)
        if progress:
            progress(row.name)
        counts = detector_counts(row)
        published = PUBLISHED[row.name]
        rows.append(
            {
                "detector": row.name,
                "backbone": row.backbone,
                "resolution": row.image_size,
                "fpn_width": row.fpn_width,
                "fpn_depth": row.fpn_depth,
                "head_depth": row.head_depth,
                "params": counts["params"],
                "trainable_params": counts["trainable_params"],
                "macs": counts["macs"],
                "gmacs": round(counts["macs"] / 1e9, 3),
                "published_params": published.params,
                "params_vs_published": round(counts["trainable_params"] / published.params - 1, 4),
                "published_gflops": published.gflops,
                "published_source": published.source,
            }
        )
    return rows
