"""Top-k ImageNet classes for a few images with a built model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeeff.labels import imagenet_classes
from edgeeff.preprocess import load_image

if TYPE_CHECKING:
    import keras


def predict_images(model: "keras.Model", paths: list[Path], top: int = 5) -> list[dict]:
    """One row per (image, rank). All images are decoded first, so a bad file fails before any work."""
    variant = model.edgeeff_variant
    card = model.edgeeff_weights.preprocessing
    batch = np.stack([load_image(p, variant.resolution, card) for p in paths])
    probs = np.asarray(model.predict(batch, verbose=0))
    own = model.edgeeff_weights.classes  # a training run's classes (``edgeeff train``)
    classes = [("-", name) for name in own] if own else imagenet_classes()
    rows = []
    for path, p in zip(paths, probs):
        for rank, idx in enumerate(np.argsort(-p)[:top], start=1):
            synset, name = classes[idx] if p.shape[-1] == len(classes) else (str(idx), str(idx))
            rows.append(
                {"image": str(path), "file": Path(path).name, "rank": rank, "class_index": int(idx), "synset": synset, "name": name, "probability": float(p[idx])}
            )
    return rows
