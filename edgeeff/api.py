"""The Python API: ``edgeeff.build("lite0", weights="lite0-pypi")``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeeff.model.builder import build_model
from edgeeff.data.preprocess import PreprocessCard
from edgeeff.model.variants import Variant, resolve
from edgeeff.weights.cards import WeightsCard, default_preprocessing, find_card
from edgeeff.weights.loaders import load_card, load_file

if TYPE_CHECKING:
    import keras

NO_WEIGHTS = {None, "", "none", "random"}


@dataclass(frozen=True)
class WeightsChoice:
    """What ``--weights`` resolved to: a card, a local file, or nothing (random init)."""

    label: str
    card: WeightsCard | None
    path: Path | None
    preprocessing: PreprocessCard
    classes: tuple[str, ...] | None = None  # a training run's own classes (``edgeeff train``), else ImageNet's


def choose_weights(variant: Variant, weights: str | Path | None) -> WeightsChoice:
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in NO_WEIGHTS):
        return WeightsChoice("none", None, None, default_preprocessing(variant))
    text = str(weights)
    path = Path(text).expanduser()
    looks_like_path = isinstance(weights, Path) or "/" in text or path.suffix.lower() in (".h5", ".keras", ".pth", ".pt")
    if path.exists() or looks_like_path:
        return WeightsChoice(str(path), None, path, _sidecar_preprocessing(path) or default_preprocessing(variant),
                             _run_classes(path, variant))
    card = find_card(text, variant)
    return WeightsChoice(card.name, card, None, card.preprocessing)


def _sidecar_preprocessing(path: Path) -> PreprocessCard | None:
    """A run directory or file may carry its own preprocessing card (``preprocessing.json``)."""
    import json

    sidecar = (path if path.is_dir() else path.parent) / "preprocessing.json"
    if sidecar.is_file():
        return PreprocessCard.from_dict(json.loads(sidecar.read_text()))
    return None


RUN_CARD = "edgeeff-run.json"  # written by ``edgeeff train`` beside the run's final weights


def _run_classes(path: Path, variant: Variant) -> tuple[str, ...] | None:
    """The class names of a training run directory, after checking it holds this architecture."""
    import json

    from edgeeff.errors import WeightsError

    card = path / RUN_CARD
    if not (path.is_dir() and card.is_file()):
        return None
    run = json.loads(card.read_text())
    if "variant" not in run:  # a detector's run (edgeeff train-detect) holds no classifier
        raise WeightsError(f"{path} is a {run.get('detector', 'non-classifier')} training run, not a classifier's; "
                           "pass a classifier run directory or weights file")
    trained = resolve(run["variant"])
    if (trained.member, trained.width, trained.depth) != (variant.member, variant.width, variant.depth):
        raise WeightsError(f"{path} was trained as {run['variant']!r}, not {variant.name!r}; use --variant {run['convert_variant']!r}")
    return tuple(run["classes"])


def build(
    variant: str | Variant,
    weights: str | Path | None = None,
    resolution: int | None = None,
    num_classes: int = 1000,
    classifier_activation: str | None = "softmax",
    random_seed: int = 0,
) -> "keras.Model":
    """Build a family member, with real weights if asked.

    ``variant`` is any spelling :func:`edgeeff.model.variants.resolve` accepts (``b0``, ``phi=1.5``,
    ``v2-s``, ``lite0:resolution=160``). ``weights`` is ``None``, ``"imagenet"``, a card name
    (``"lite0-pypi"``) or a path. The model carries ``edgeeff_variant`` and ``edgeeff_weights``
    attributes so later steps (conversion, evaluation) know what they hold.
    """
    v = resolve(variant)
    if resolution is not None:
        from edgeeff.model.variants import with_changes

        v = with_changes(v, resolution=resolution, name=f"{v.name}:resolution={resolution}", base=v.member)
    choice = choose_weights(v, weights)
    pre = choice.preprocessing
    if choice.card is None and choice.path is None:
        import keras

        # Random init is seeded: a random-weights model must be rebuildable, so that an artifact
        # converted from it can be compared with its reference later (eval, the CI gate).
        keras.utils.set_random_seed(random_seed)
    if choice.classes:
        num_classes = len(choice.classes)
    model = build_model(v, mean=pre.mean, std=pre.std, num_classes=num_classes, classifier_activation=classifier_activation)
    if choice.card is not None:
        load_card(model, choice.card)
    elif choice.path is not None:
        load_file(model, choice.path)
    model.edgeeff_variant = v
    model.edgeeff_weights = choice
    return model
