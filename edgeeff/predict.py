"""Top-k classes for a few images, from a built Keras model or from any runner (an artifact, a model file)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from edgeeff.evaluate import top_k
from edgeeff.data.labels import imagenet_classes
from edgeeff.data.preprocess import PreprocessCard, load_image

if TYPE_CHECKING:
    import keras


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Class names, one per line, in the model's output order (``--labels``)."""
    from edgeeff.errors import EdgeeffError

    try:
        names = tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeeffError(f"cannot read labels file {path}: {exc}") from None
    if not names:
        raise EdgeeffError(f"labels file {path} is empty; write one class name per line, in the model's output order")
    return names


def top_k_rows(predict: Callable[[np.ndarray], np.ndarray], paths: Sequence[Path], resolution: int, card: PreprocessCard,
               top: int = 5, names: Sequence[str] | None = None, logits: bool = True) -> list[dict]:
    """One row per (image, rank). All images are decoded first, so a bad file fails before any work.
    ``names``: the model's class names (default ImageNet's); ``logits``: outputs still need a softmax."""
    batch = np.stack([load_image(p, resolution, card) for p in paths])
    out = np.asarray(predict(batch), dtype=np.float64)
    if logits:
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    classes = [("-", name) for name in names] if names else imagenet_classes()
    rows = []
    for path, p in zip(paths, out):
        for rank, idx in enumerate(top_k(p[None], top)[0], start=1):
            synset, name = classes[idx] if p.shape[-1] == len(classes) else (str(idx), str(idx))
            rows.append({"image": str(path), "file": Path(path).name, "rank": rank, "class_index": int(idx), "synset": synset,
                         "name": name, "probability": float(p[idx])})
    return rows


def predict_images(model: "keras.Model", paths: list[Path], top: int = 5) -> list[dict]:
    """Top-k of a built model (it ends in a softmax), with a training run's own classes where it has them."""
    return top_k_rows(lambda x: model.predict(x, verbose=0), paths, model.edgeeff_variant.resolution,
                      model.edgeeff_weights.preprocessing, top, model.edgeeff_weights.classes, logits=False)
