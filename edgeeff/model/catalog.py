"""Rows for ``edgeeff models``: every registered variant with counts computed from its built model.

Building all twenty models takes about a minute, so the computed counts are cached per variant
under the user cache folder, keyed by a hash of the variant's row and the builder's source: any
change to the table or the builder invalidates them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from edgeeff import fsio
from edgeeff.model.variants import VARIANTS, Variant
from edgeeff.weights.cards import cards_for


def cache_dir() -> Path:
    base = os.environ.get("EDGEEFF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "edgeeff"
    )
    return Path(base)


def _variant_key(variant: Variant) -> str:
    import edgeeff.model.builder as builder

    payload = json.dumps(asdict(variant), sort_keys=True, default=str) + Path(builder.__file__).read_text()
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def counts(variant: Variant, use_cache: bool = True) -> dict:
    """Parameters and multiply-adds of ``variant`` (built once, then cached)."""
    path = cache_dir() / "counts" / f"{variant.name}-{_variant_key(variant)}.json"
    if use_cache and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    import keras

    from edgeeff.model.builder import build_model
    from edgeeff.model.flops import count_macs, count_params

    model = build_model(variant)
    total, trainable = count_params(model)
    result = {"params": total, "trainable_params": trainable, "macs": count_macs(model)}
    keras.backend.clear_session()
    if use_cache:
        try:
            fsio.write_text(path, json.dumps(result))
        except fsio.OutputError:
            pass  # a read-only cache only costs time
    return result


def model_rows(names: list[str] | None = None, progress: Callable[[str], None] | None = None) -> list[dict]:
    rows = []
    for name in names or list(VARIANTS):
        variant = VARIANTS[name]
        if progress:
            progress(name)
        c = counts(variant)
        rows.append(
            {
                "variant": name,
                "family": variant.family.name,
                "resolution": variant.resolution,
                "width": variant.width,
                "depth": variant.depth,
                "dropout": variant.dropout,
                "params": c["params"],
                "trainable_params": c["trainable_params"],
                "macs": c["macs"],
                "gmacs": round(c["macs"] / 1e9, 3),
                "weights": [card.name for card in cards_for(name)],
                "stages": list(variant.stages),
            }
        )
    return rows
